//! Pure numbers of `vision-dev demo` and `vision-dev bench`: percentiles,
//! the analysis of a run's timeline (slot utilisation while jobs wait,
//! refill latency), the seeded job-mix generator and a Prometheus text
//! parser. No I/O, no clock.

use std::cmp::Ordering;
use std::collections::VecDeque;

/// The nearest-rank percentile `p` (0..=100) of `values` (any order).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// One thing the driver saw, at a time in milliseconds since its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    /// The API server accepted a new job: it waits.
    Submitted,
    /// A pod of a job appeared; `first`: the job's first pod (it stops waiting).
    PodCreated { first: bool },
    /// A pod ended (Succeeded, Failed) or went away.
    PodEnded,
    /// A job was seen admitted for the first time.
    Admitted,
    /// A job reached a final phase without ever getting a pod (bad input,
    /// rejection): it stops waiting.
    FinalWithoutPod,
    /// A job reached a final phase.
    Final,
}

/// Percentiles of a set of durations in ms, rounded to 0.1 ms; `None` (JSON
/// `null`) when there were no samples.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

impl Percentiles {
    fn at(values: &[f64], p: f64) -> Option<f64> {
        percentile(values, p).map(|x| (x * 10.0).round() / 10.0)
    }

    /// p50 and p99 only.
    pub fn short(values: &[f64]) -> Self {
        Percentiles {
            p50: Self::at(values, 50.0),
            p99: Self::at(values, 99.0),
            ..Default::default()
        }
    }

    /// p50, p90, p95, p99, the maximum and the number of samples.
    pub fn full(values: &[f64]) -> Self {
        Percentiles {
            p50: Self::at(values, 50.0),
            p90: Self::at(values, 90.0),
            p95: Self::at(values, 95.0),
            p99: Self::at(values, 99.0),
            max: Self::at(values, 100.0),
            samples: Some(values.len()),
        }
    }
}

/// What a timeline says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// First event to the last Final, ms.
    pub makespan_ms: f64,
    /// Time during which at least one job waited (submitted, no pod yet), ms.
    pub waiting_ms: f64,
    /// Integral of live pods over the waiting time divided by
    /// (waiting time x slots); None when nothing waited.
    pub utilisation_while_waiting: Option<f64>,
    /// For each pod that ended while jobs waited: the time until the next
    /// pod was created, ms.
    pub refill_ms: Vec<f64>,
    /// Jobs seen admitted.
    pub admissions: usize,
    /// First to last admission, ms.
    pub admission_span_ms: f64,
    /// The most pods alive at once.
    pub max_live_pods: usize,
    /// Final jobs.
    pub finals: usize,
}

/// Analyses a timeline (sorted here) of one run with `slots` slots.
pub fn analyze(events: &[(f64, Ev)], slots: u32) -> Analysis {
    let mut ev: Vec<(f64, Ev)> = events.to_vec();
    ev.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    let mut a = Analysis::default();
    let (mut waiting, mut live) = (0i64, 0i64);
    let mut ended: VecDeque<f64> = VecDeque::new();
    let (mut live_integral, mut first_admit, mut last_admit) = (0.0, None, 0.0);
    let start = ev.first().map(|e| e.0).unwrap_or(0.0);
    let mut last_final = start;
    for (i, &(t, e)) in ev.iter().enumerate() {
        match e {
            Ev::Submitted => waiting += 1,
            Ev::PodCreated { first } => {
                live += 1;
                if first {
                    waiting -= 1;
                }
                if let Some(f) = ended.pop_front() {
                    a.refill_ms.push(t - f);
                }
            }
            Ev::PodEnded => {
                live -= 1;
                if waiting > 0 {
                    ended.push_back(t);
                }
            }
            Ev::Admitted => {
                a.admissions += 1;
                first_admit.get_or_insert(t);
                last_admit = t;
            }
            Ev::FinalWithoutPod => {
                waiting -= 1;
                a.finals += 1;
                last_final = t;
            }
            Ev::Final => {
                a.finals += 1;
                last_final = t;
            }
        }
        if waiting <= 0 {
            // Nothing waits: a slot freed now has nothing to refill it.
            ended.clear();
        }
        a.max_live_pods = a.max_live_pods.max(live.max(0) as usize);
        if let Some(&(next, _)) = ev.get(i + 1)
            && waiting > 0
        {
            let dt = next - t;
            a.waiting_ms += dt;
            live_integral += live.max(0) as f64 * dt;
        }
    }
    a.makespan_ms = last_final - start;
    if a.waiting_ms > 0.0 && slots > 0 {
        a.utilisation_while_waiting = Some(live_integral / (a.waiting_ms * slots as f64));
    }
    if let Some(f) = first_admit {
        a.admission_span_ms = last_admit - f;
    }
    a
}

/// A small deterministic generator (splitmix64), so that a demo or a
/// benchmark with the same seed submits the same jobs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// One Prometheus sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, "" when absent (as Prometheus treats it).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Parses Prometheus text exposition into samples.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind('}') {
            Some(close) => (&line[..=close], line[close + 1..].trim()),
            None => match line.split_once(' ') {
                Some((h, v)) => (h, v.trim()),
                None => continue,
            },
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (head, Vec::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &after[end.min(after.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn utilisation_and_refill() {
        // 1 slot, 2 jobs: pod A runs 0..100, pod B is created at 110.
        use Ev::*;
        let ev = [
            (0.0, Submitted),
            (0.0, Submitted),
            (0.0, PodCreated { first: true }),
            (0.0, Admitted),
            (100.0, PodEnded),
            (100.0, Final),
            (110.0, Admitted),
            (110.0, PodCreated { first: true }),
            (210.0, PodEnded),
            (210.0, Final),
        ];
        let a = analyze(&ev, 1);
        assert_eq!(a.refill_ms, vec![10.0]);
        assert_eq!(a.waiting_ms, 110.0);
        let u = a.utilisation_while_waiting.unwrap();
        assert!((u - 100.0 / 110.0).abs() < 1e-9, "{u}");
        assert_eq!(a.makespan_ms, 210.0);
        assert_eq!(a.admissions, 2);
        assert_eq!(a.admission_span_ms, 110.0);
        assert_eq!(a.max_live_pods, 1);
        assert_eq!(a.finals, 2);
    }

    #[test]
    fn pods_ending_with_nothing_waiting_are_not_refills() {
        use Ev::*;
        let ev = [
            (0.0, Submitted),
            (1.0, PodCreated { first: true }),
            (5.0, PodEnded),
            (9.0, Submitted),
            (12.0, PodCreated { first: true }),
        ];
        assert!(analyze(&ev, 1).refill_ms.is_empty());
    }

    #[test]
    fn prometheus_text() {
        let t = "# HELP x y\napiserver_request_total{code=\"201\",resource=\"pods\",subresource=\"\",verb=\"POST\"} 42\nup 1\n";
        let s = parse_prometheus(t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "apiserver_request_total");
        assert_eq!(s[0].value, 42.0);
        assert_eq!(s[0].label("subresource"), "");
        assert_eq!(s[0].label("verb"), "POST");
        assert_eq!(s[0].label("resource"), "pods");
        assert_eq!(
            s[1],
            Sample {
                name: "up".into(),
                labels: vec![],
                value: 1.0
            }
        );
    }

    #[test]
    fn percentiles_round_and_count() {
        let v = [1.04, 2.0, 3.0, 4.0, 100.06];
        assert_eq!(
            Percentiles::full(&v),
            Percentiles {
                p50: Some(3.0),
                p90: Some(100.1),
                p95: Some(100.1),
                p99: Some(100.1),
                max: Some(100.1),
                samples: Some(5),
            }
        );
        assert_eq!(
            serde_json::to_string(&Percentiles::short(&[])).unwrap(),
            r#"{"p50":null,"p99":null}"#
        );
    }

    #[test]
    fn deterministic_rng() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let u = Rng::new(1).unit();
        assert!((0.0..1.0).contains(&u));
    }
}
