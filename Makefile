# Thin wrappers over the scripts in hack/ (see hack/README.md, docs/VISIONCTL.md
# and docs/PERFORMANCE.md). Extra arguments: make bench ARGS="--jobs 2000".
.PHONY: demo demo-down test bench cluster-up cluster-down crds

# Build, start the local cluster and the operator, submit ~1000 jobs, follow them.
demo:
	hack/demo.sh up $(ARGS)

# Stop the demo's operator and the local cluster.
demo-down:
	hack/demo.sh down

# Unit, property and end-to-end tests against the local cluster.
test:
	hack/test.sh $(ARGS)

# The end-to-end benchmark (release build); results in .local/bench/.
# Scenarios: ARGS="--scenario all|scale|queued|fairness|workers"; scale = every
# scale target from one run with 100,000 jobs (about 20-35 min; run it on a
# cluster of its own, see docs/PERFORMANCE.md); workers = pod mode
# vs worker mode on one burst of 100 ms jobs, with a worker and the leader
# killed mid-burst (ARGS="--scenario workers --short" for 300 jobs).
bench:
	hack/bench.sh $(ARGS)

cluster-up:
	hack/cluster.sh up $(ARGS)

cluster-down:
	hack/cluster.sh down

# Regenerate the CRDs from the Rust types (crds/ and the Helm chart's copy).
crds:
	cargo run --bin crdgen -- --write crds charts/vision-operator/crds
