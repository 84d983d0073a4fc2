//! RFC 6962 Merkle tree over audit entries: leaf `SHA-256(0x00 ‖ canonical)`, node
//! `SHA-256(0x01 ‖ left ‖ right)`, split at the largest power of two below n.
//!
//! The tree is extended, never recomputed: appending leaf i completes the perfect
//! subtrees that end at i, and only those nodes are stored. Any subtree hash the RFC's
//! proofs need is a perfect node or a fold of O(log n) perfect nodes on the right edge,
//! so proofs cost O(log n) node reads whatever the log size.

pub use arbiter_client::proof::{leaf_hash, node_hash, verify_consistency, verify_inclusion, Hash};
use sha2::{Digest, Sha256};

/// Root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A stored perfect subtree: level 0 are leaves; node (level, index) covers leaves
/// `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

/// The right edge of the tree: one perfect subtree per set bit of the size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    /// Largest subtree first.
    pub nodes: Vec<Node>,
}

impl Frontier {
    /// Appends a leaf and returns every node it completes (the leaf included).
    pub fn push(&mut self, leaf: Hash) -> Vec<Node> {
        let mut created = Vec::new();
        self.push_with(leaf, |n| created.push(n));
        created
    }

    /// Appends a leaf, keeping only the frontier: rebuilding a tree to compare its root
    /// (verification, millions of leaves) needs no node list per leaf.
    pub fn append(&mut self, leaf: Hash) {
        self.push_with(leaf, |_| {});
    }

    fn push_with(&mut self, leaf: Hash, mut created: impl FnMut(Node)) {
        let mut current = Node {
            level: 0,
            index: self.size,
            hash: leaf,
        };
        created(current);
        while let Some(last) = self.nodes.last().copied() {
            if last.level != current.level {
                break;
            }
            self.nodes.pop();
            current = Node {
                level: current.level + 1,
                index: last.index / 2,
                hash: node_hash(&last.hash, &current.hash),
            };
            created(current);
        }
        self.nodes.push(current);
        self.size += 1;
    }

    /// The tree head: the frontier folded from the smallest subtree up.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(first) = it.next() else {
            return empty_root();
        };
        it.fold(first.hash, |acc, n| node_hash(&n.hash, &acc))
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored perfect nodes.
    pub fn at(size: u64, node: &mut impl FnMut(u32, u64) -> Option<Hash>) -> Option<Self> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                let index = start >> level;
                nodes.push(Node {
                    level,
                    index,
                    hash: node(level, index)?,
                });
                start += 1u64 << level;
            }
        }
        Some(Self { size, nodes })
    }
}

/// Where node (level, index) sits when every node is stored in the order it completes
/// (post-order): the node completes with leaf `m − 1`, `m = (index+1)·2^level`, after
/// the `2(m−1) − popcount(m−1)` nodes of the tree of `m − 1` leaves and the `level`
/// smaller nodes that leaf completes first. Stored by this key, a commit's nodes append
/// to one b-tree instead of landing on a page per level.
pub fn stored_position(level: u32, index: u64) -> u64 {
    let before = ((index + 1) << level) - 1;
    stored_nodes(before) + u64::from(level)
}

/// How many nodes a tree of `size` leaves stores.
pub fn stored_nodes(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The tree size that stores exactly `count` nodes, if one does (a count between two
/// sizes' is a tree cut off inside a leaf's nodes: not a tree the writer leaves).
pub fn size_storing(count: u64) -> Option<u64> {
    // stored_nodes grows strictly (by 1 + trailing_zeros(size) per leaf), and
    // stored_nodes(n) ≥ n, so the size is in [0, count].
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stored_nodes(mid) < count {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (stored_nodes(lo) == count).then_some(lo)
}

fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `[start, start+size)`, from stored perfect nodes.
fn subtree(start: u64, size: u64, node: &mut impl FnMut(u32, u64) -> Option<Hash>) -> Option<Hash> {
    if size.is_power_of_two() && start.is_multiple_of(size) {
        let level = size.trailing_zeros();
        return node(level, start >> level);
    }
    let k = largest_power_of_two_below(size);
    let left = subtree(start, k, node)?;
    let right = subtree(start + k, size - k, node)?;
    Some(node_hash(&left, &right))
}

/// RFC 6962 §2.1.1 PATH(m, D[start:start+n]).
fn path(
    m: u64,
    start: u64,
    n: u64,
    node: &mut impl FnMut(u32, u64) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Option<()> {
    if n <= 1 {
        return Some(());
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        path(m, start, k, node, out)?;
        out.push(subtree(start + k, n - k, node)?);
    } else {
        path(m - k, start + k, n - k, node, out)?;
        out.push(subtree(start, k, node)?);
    }
    Some(())
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves (sibling hashes from
/// the leaf up).
pub fn inclusion_proof(
    index: u64,
    size: u64,
    mut node: impl FnMut(u32, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(index, 0, size, &mut node, &mut out)?;
    Some(out)
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[start:start+n], b).
fn subproof(
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    node: &mut impl FnMut(u32, u64) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Option<()> {
    if m == n {
        if !complete {
            out.push(subtree(start, n, node)?);
        }
        return Some(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(m, start, k, complete, node, out)?;
        out.push(subtree(start + k, n - k, node)?);
    } else {
        subproof(m - k, start + k, n - k, false, node, out)?;
        out.push(subtree(start, k, node)?);
    }
    Some(())
}

/// Consistency proof that the tree of `old` leaves is a prefix of the tree of `new`.
pub fn consistency_proof(
    old: u64,
    new: u64,
    mut node: impl FnMut(u32, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if old == 0 || old > new {
        return None;
    }
    let mut out = Vec::new();
    if old < new {
        subproof(old, 0, new, true, &mut node, &mut out)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The RFC's recursive definition, over all leaves: the reference.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn build(n: u64) -> (Vec<Hash>, Frontier, HashMap<(u32, u64), Hash>) {
        let mut f = Frontier::default();
        let mut store = HashMap::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            let leaf = leaf_hash(format!("entry {i}").as_bytes());
            leaves.push(leaf);
            for node in f.push(leaf) {
                store.insert((node.level, node.index), node.hash);
            }
        }
        (leaves, f, store)
    }

    #[test]
    fn stored_positions_number_nodes_in_the_order_pushes_create_them() {
        let mut f = Frontier::default();
        let mut next = 0u64;
        assert_eq!(size_storing(0), Some(0));
        for i in 0..5_000u64 {
            for node in f.push(leaf_hash(&i.to_be_bytes())) {
                assert_eq!(stored_position(node.level, node.index), next, "{node:?}");
                next += 1;
            }
            assert_eq!(stored_nodes(f.size), next);
            assert_eq!(size_storing(next), Some(f.size));
        }
        // A count that falls inside one leaf's nodes is no tree: leaf 3 stores three.
        assert_eq!(stored_nodes(3), 4);
        assert_eq!(stored_nodes(4), 7);
        assert_eq!(size_storing(5), None);
        assert_eq!(size_storing(6), None);
    }

    #[test]
    fn the_empty_tree_and_leaf_hashing_match_rfc_6962() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 6962 test vector: the leaf hash of the empty entry.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    /// The published RFC 6962 reference data (tests/vectors/rfc6962-merkle.json, also
    /// checked by the Python verifier's tests): our tree must produce exactly these
    /// roots and proofs, and our verifiers must accept them.
    #[test]
    fn the_published_rfc_6962_vectors_are_reproduced() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/vectors/rfc6962-merkle.json"))
                .unwrap();
        let hash = |h: &serde_json::Value| -> Hash {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let hashes = |p: &serde_json::Value| -> Vec<Hash> {
            p.as_array().unwrap().iter().map(hash).collect()
        };
        let mut f = Frontier::default();
        let mut store = HashMap::new();
        let mut leaves = Vec::new();
        for (i, leaf) in v["leaves_hex"].as_array().unwrap().iter().enumerate() {
            let leaf = leaf_hash(&hex::decode(leaf.as_str().unwrap()).unwrap());
            leaves.push(leaf);
            for node in f.push(leaf) {
                store.insert((node.level, node.index), node.hash);
            }
            assert_eq!(f.root(), hash(&v["roots"][i]), "root of size {}", i + 1);
        }
        assert_eq!(empty_root(), hash(&v["empty_root"]));
        let node = |l: u32, i: u64| store.get(&(l, i)).copied();
        let root = |size: u64| hash(&v["roots"][size as usize - 1]);
        for case in v["inclusion"].as_array().unwrap() {
            let (index, size) = (
                case["leaf_index"].as_u64().unwrap(),
                case["tree_size"].as_u64().unwrap(),
            );
            let want = hashes(&case["proof"]);
            assert_eq!(inclusion_proof(index, size, node).unwrap(), want, "{case}");
            assert!(verify_inclusion(
                index,
                size,
                &leaves[index as usize],
                &want,
                &root(size)
            ));
        }
        for case in v["consistency"].as_array().unwrap() {
            let (old, new) = (
                case["old_size"].as_u64().unwrap(),
                case["new_size"].as_u64().unwrap(),
            );
            let want = hashes(&case["proof"]);
            assert_eq!(consistency_proof(old, new, node).unwrap(), want, "{case}");
            assert!(verify_consistency(old, new, &root(old), &root(new), &want));
        }
    }

    #[test]
    fn incremental_roots_equal_the_recursive_definition() {
        for n in 0..70u64 {
            let (leaves, f, store) = build(n);
            assert_eq!(f.root(), mth(&leaves), "n = {n}");
            let rebuilt = Frontier::at(n, &mut |l, i| store.get(&(l, i)).copied()).unwrap();
            assert_eq!(rebuilt, f);
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_tampering_fails() {
        let (leaves, _f, store) = build(40);
        let node = |l: u32, i: u64| store.get(&(l, i)).copied();
        for size in 1..=40u64 {
            let root = mth(&leaves[..size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(index, size, node).unwrap();
                assert!(
                    verify_inclusion(index, size, &leaves[index as usize], &proof, &root),
                    "{index}/{size}"
                );
                let wrong = leaf_hash(b"forged");
                assert!(!verify_inclusion(index, size, &wrong, &proof, &root));
            }
            for old in 1..=size {
                let old_root = mth(&leaves[..old as usize]);
                let proof = consistency_proof(old, size, node).unwrap();
                assert!(
                    verify_consistency(old, size, &old_root, &root, &proof),
                    "{old}->{size}"
                );
                if old < size {
                    let other = mth(&leaves[1..old as usize + 1]);
                    assert!(
                        !verify_consistency(old, size, &other, &root, &proof),
                        "rewrite {old}->{size}"
                    );
                }
            }
        }
    }
}
