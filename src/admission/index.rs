//! The job table and the ordered index of pending jobs.
//!
//! Every job known to the pool lives in one [`Slab`] slot, addressed by a
//! dense `u32` id. A pending job is also a node of exactly one [`Tree`]: the
//! tree of its (queue, algorithm, gpus) group. The tree links live inside the
//! job record itself, so indexing a pending job costs no allocation beyond the
//! record (this is what keeps a pending job well under 512 bytes).
//!
//! The trees are treaps with subtree sizes: insert, remove and rank
//! (the number of members ordered before a given one) are O(log n) expected.
//! Heap weights come from a counter mixed by splitmix64, so the shape is a
//! deterministic function of the operation sequence; the shape never affects
//! a decision anyway, only the member order does.

use std::cmp::Ordering as CmpOrdering;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::JobKey;

/// The id of a job record in the [`Slab`].
pub(crate) type JobId = u32;
/// "No node": the null link of the trees.
pub(crate) const NIL: JobId = u32::MAX;

/// What a known job currently is, in the pool's own view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Waits in its group tree.
    Pending,
    /// Holds a slot, its GPUs and one unit of its algorithm's capacity.
    Holding,
}

/// One known job. 56 bytes plus its shared key.
#[derive(Debug)]
pub(crate) struct Job {
    /// Shared with the key -> id map, so the names are stored once.
    pub key: Arc<JobKey>,
    pub created_ms: i64,
    pub priority: i32,
    pub gpus: u32,
    /// Interned queue id.
    pub queue: u32,
    /// Interned tenant id within its queue.
    pub tenant: u32,
    /// Interned algorithm id.
    pub algo: u32,
    pub state: State,
    // Treap links, meaningful only while `state == Pending`.
    pub left: JobId,
    pub right: JobId,
    pub size: u32,
    pub weight: u32,
}

impl Job {
    /// The admission order: priority descending, then creation time
    /// ascending, then namespace/name. A total order because keys are unique.
    pub fn order(&self, other: &Job) -> CmpOrdering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.created_ms.cmp(&other.created_ms))
            .then_with(|| self.key.cmp(&other.key))
    }

    /// Whether `self` is admitted before `other`.
    pub fn precedes(&self, other: &Job) -> bool {
        self.order(other) == CmpOrdering::Less
    }
}

/// Dense storage of job records with a free list (ids are reused).
#[derive(Debug, Default)]
pub(crate) struct Slab {
    slots: Vec<Option<Job>>,
    free: Vec<JobId>,
}

impl Slab {
    pub fn insert(&mut self, job: Job) -> JobId {
        if let Some(id) = self.free.pop() {
            self.slots[id as usize] = Some(job);
            id
        } else {
            self.slots.push(Some(job));
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 jobs")
        }
    }

    pub fn remove(&mut self, id: JobId) -> Job {
        let job = self.slots[id as usize].take().expect("live job id");
        self.free.push(id);
        job
    }

    pub fn iter(&self) -> impl Iterator<Item = (JobId, &Job)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|j| (i as JobId, j)))
    }
}

impl Index<JobId> for Slab {
    type Output = Job;
    fn index(&self, id: JobId) -> &Job {
        self.slots[id as usize].as_ref().expect("live job id")
    }
}

impl IndexMut<JobId> for Slab {
    fn index_mut(&mut self, id: JobId) -> &mut Job {
        self.slots[id as usize].as_mut().expect("live job id")
    }
}

/// splitmix64: a cheap, well-mixed deterministic weight source.
pub(crate) fn mix(seq: u64) -> u32 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// An order-statistic treap over jobs of the slab, with its first member
/// cached so that "the head of the group" is O(1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tree {
    root: JobId,
    head: JobId,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            root: NIL,
            head: NIL,
        }
    }
}

fn size(s: &Slab, t: JobId) -> u32 {
    if t == NIL { 0 } else { s[t].size }
}

fn update(s: &mut Slab, t: JobId) {
    let n = 1 + size(s, s[t].left) + size(s, s[t].right);
    s[t].size = n;
}

fn less(s: &Slab, a: JobId, b: JobId) -> bool {
    s[a].precedes(&s[b])
}

/// Splits `t` into (members before `x`, members from `x` on).
fn split(s: &mut Slab, t: JobId, x: JobId) -> (JobId, JobId) {
    if t == NIL {
        return (NIL, NIL);
    }
    if less(s, t, x) {
        let (a, b) = split(s, s[t].right, x);
        s[t].right = a;
        update(s, t);
        (t, b)
    } else {
        let (a, b) = split(s, s[t].left, x);
        s[t].left = b;
        update(s, t);
        (a, t)
    }
}

/// Joins two treaps where every member of `a` precedes every member of `b`.
fn merge(s: &mut Slab, a: JobId, b: JobId) -> JobId {
    if a == NIL {
        return b;
    }
    if b == NIL {
        return a;
    }
    if s[a].weight > s[b].weight {
        let r = merge(s, s[a].right, b);
        s[a].right = r;
        update(s, a);
        a
    } else {
        let l = merge(s, a, s[b].left);
        s[b].left = l;
        update(s, b);
        b
    }
}

fn insert_at(s: &mut Slab, t: JobId, x: JobId) -> JobId {
    if t == NIL {
        return x;
    }
    if s[x].weight > s[t].weight {
        let (a, b) = split(s, t, x);
        s[x].left = a;
        s[x].right = b;
        update(s, x);
        x
    } else if less(s, x, t) {
        let l = insert_at(s, s[t].left, x);
        s[t].left = l;
        s[t].size += 1;
        t
    } else {
        let r = insert_at(s, s[t].right, x);
        s[t].right = r;
        s[t].size += 1;
        t
    }
}

fn remove_at(s: &mut Slab, t: JobId, x: JobId) -> JobId {
    debug_assert!(t != NIL, "removing a job that is not in the tree");
    if t == x {
        return merge(s, s[x].left, s[x].right);
    }
    if less(s, x, t) {
        let l = remove_at(s, s[t].left, x);
        s[t].left = l;
    } else {
        let r = remove_at(s, s[t].right, x);
        s[t].right = r;
    }
    // Exactly one node left this subtree: no need to read the children.
    s[t].size -= 1;
    t
}

/// Removes the first member of `t` (no comparisons: the left spine).
fn remove_first(s: &mut Slab, t: JobId) -> JobId {
    let l = s[t].left;
    if l == NIL {
        return s[t].right;
    }
    let l = remove_first(s, l);
    s[t].left = l;
    s[t].size -= 1;
    t
}

impl Tree {
    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    #[cfg(test)]
    pub fn len(&self, s: &Slab) -> u32 {
        size(s, self.root)
    }

    /// The first member in admission order.
    pub fn head(&self) -> Option<JobId> {
        (self.head != NIL).then_some(self.head)
    }

    /// Adds `x` (its order fields and `weight` must already be set).
    pub fn insert(&mut self, s: &mut Slab, x: JobId) {
        s[x].left = NIL;
        s[x].right = NIL;
        s[x].size = 1;
        self.root = insert_at(s, self.root, x);
        if self.head == NIL || less(s, x, self.head) {
            self.head = x;
        }
    }

    /// Removes member `x` (its order fields must be the ones it was inserted
    /// with).
    pub fn remove(&mut self, s: &mut Slab, x: JobId) {
        if self.head == x {
            // The common case (admission takes group heads): walk the left
            // spine only.
            self.root = remove_first(s, self.root);
            self.head = self.leftmost(s);
        } else {
            self.root = remove_at(s, self.root, x);
        }
    }

    fn leftmost(&self, s: &Slab) -> JobId {
        let mut t = self.root;
        if t == NIL {
            return NIL;
        }
        while s[t].left != NIL {
            t = s[t].left;
        }
        t
    }

    /// The number of members ordered before `x` (`x` need not be a member).
    pub fn rank(&self, s: &Slab, x: JobId) -> usize {
        let mut t = self.root;
        let mut n = 0usize;
        while t != NIL {
            if t == x {
                return n + size(s, s[t].left) as usize;
            }
            if less(s, x, t) {
                t = s[t].left;
            } else {
                n += size(s, s[t].left) as usize + 1;
                t = s[t].right;
            }
        }
        n
    }

    /// Members in order (O(n); for tests and snapshots, never on a hot path).
    pub fn members(&self, s: &Slab) -> Vec<JobId> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut t = self.root;
        while t != NIL || !stack.is_empty() {
            while t != NIL {
                stack.push(t);
                t = s[t].left;
            }
            let n = stack.pop().expect("non-empty stack");
            out.push(n);
            t = s[n].right;
        }
        out
    }

    /// Checks sizes, order, heap property and the cached head (tests only).
    #[cfg(test)]
    pub fn check(&self, s: &Slab) {
        fn walk(s: &Slab, t: JobId) -> u32 {
            if t == NIL {
                return 0;
            }
            let (l, r) = (s[t].left, s[t].right);
            for c in [l, r] {
                if c != NIL {
                    assert!(s[c].weight <= s[t].weight, "heap property");
                }
            }
            let n = 1 + walk(s, l) + walk(s, r);
            assert_eq!(n, s[t].size, "subtree size");
            n
        }
        walk(s, self.root);
        let m = self.members(s);
        for w in m.windows(2) {
            assert!(less(s, w[0], w[1]), "in-order traversal is sorted");
        }
        assert_eq!(m.first().copied().unwrap_or(NIL), self.head, "cached head");
    }
}
