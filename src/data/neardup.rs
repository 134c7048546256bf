//! Near-duplicate groups and deterministic splits.
//!
//! Lookup uses multi-index hashing: the 64 pHash bits are cut into `radius + 1` disjoint chunks;
//! by the pigeonhole principle two hashes within `radius` bits agree exactly on at least one
//! chunk, so only images sharing a chunk value are compared. That keeps 100k images at
//! roughly a few hundred comparisons each instead of 100k.
//!
//! Grouping is incremental and never rewrites history:
//! - an image already in the manifest keeps its group and split;
//! - new images within `radius` of each other are linked (single linkage, any input order gives
//!   the same components);
//! - a component of new images touching no existing image forms a new group, named after its
//!   smallest content id, with the split drawn from `stable_u64(salt/group)`;
//! - a component touching one existing group joins it and takes its split;
//! - a component touching several existing groups (a *bridge*) joins the group of its closest
//!   existing neighbour (smallest Hamming distance, then smallest group id). The existing groups
//!   stay separate and keep their splits; bridges are reported because their members are near
//!   duplicates of images in the other groups too.
//!
//! Two more links, on top of pHash: images sharing a *group key* (the value of a grouping column,
//! e.g. the video a frame came from), and an image-to-image child and its *parent* (by content
//! id; a parent may live in another dataset's manifest, given as `external`). They rank before
//! every pHash link, even an exact one, when a bridge picks the group to join: a frame that also
//! looks like another video's frame stays with its own video. So frames of one video, and
//! generated variants of an image, always share the split of the group they join, however many
//! ingests they arrive over.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::SplitConfig;
use crate::util::hash::stable_u64;

use super::manifest::Split;
use super::phash::hamming;

/// Multi-index over 64-bit hashes for Hamming-radius queries.
pub struct NearDupIndex {
    radius: u32,
    /// (shift, mask) of each chunk.
    chunks: Vec<(u32, u64)>,
    tables: Vec<HashMap<u64, Vec<u32>>>,
    hashes: Vec<u64>,
}

impl NearDupIndex {
    /// An empty index answering queries within `radius` bits.
    pub fn new(radius: u32) -> Self {
        let m = (radius + 1).min(64);
        let chunks = (0..m)
            .map(|i| {
                let lo = i * 64 / m;
                let hi = (i + 1) * 64 / m;
                let width = hi - lo;
                let mask = if width == 64 {
                    u64::MAX
                } else {
                    (1u64 << width) - 1
                };
                (lo, mask)
            })
            .collect::<Vec<_>>();
        Self {
            radius,
            tables: vec![HashMap::new(); chunks.len()],
            chunks,
            hashes: Vec::new(),
        }
    }

    /// Adds a hash; returns its index (insertion order).
    pub fn insert(&mut self, h: u64) -> u32 {
        let idx = self.hashes.len() as u32;
        self.hashes.push(h);
        for (t, &(shift, mask)) in self.tables.iter_mut().zip(&self.chunks) {
            t.entry((h >> shift) & mask).or_default().push(idx);
        }
        idx
    }

    /// Number of hashes indexed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Indices of all hashes within the radius of `h`, each once, with their distance.
    pub fn query(&self, h: u64, out: &mut Vec<(u32, u32)>) {
        out.clear();
        for (t, &(shift, mask)) in self.tables.iter().zip(&self.chunks) {
            if let Some(cands) = t.get(&((h >> shift) & mask)) {
                for &c in cands {
                    let d = hamming(h, self.hashes[c as usize]);
                    if d <= self.radius {
                        out.push((c, d));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// The split of a group: a pure function of the salt and the group id.
pub fn split_for_group(group: &str, cfg: &SplitConfig) -> Split {
    let h = stable_u64(&format!("{}/{}", cfg.salt, group));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    if u < cfg.train {
        Split::Train
    } else if u < cfg.train + cfg.val {
        Split::Val
    } else {
        Split::Test
    }
}

/// What an existing manifest row contributes to grouping.
#[derive(Debug, Clone)]
pub struct ExistingMember<'a> {
    pub id: &'a str,
    pub phash: u64,
    pub group: &'a str,
    pub split: Split,
    pub key: Option<&'a str>,
}

/// A new image to be grouped.
#[derive(Debug, Clone)]
pub struct NewMember<'a> {
    pub id: &'a str,
    pub phash: u64,
    /// Group key (e.g. `video_id:abc`).
    pub key: Option<&'a str>,
    /// Content id of the image it was generated from.
    pub parent: Option<&'a str>,
}

impl<'a> NewMember<'a> {
    /// An image linked by pHash only.
    pub fn new(id: &'a str, phash: u64) -> Self {
        NewMember {
            id,
            phash,
            key: None,
            parent: None,
        }
    }
}

/// Group and split of parents found outside the manifest being grouped, by content id.
pub type ExternalParents<'a> = HashMap<&'a str, (&'a str, Split)>;

/// Group and split chosen for one new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub group: String,
    pub split: Split,
}

/// A component of new images that touched more than one existing group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Group the new images joined.
    pub joined: String,
    /// Every existing group the component was within radius of.
    pub touched: Vec<String>,
    /// Ids of the new images in the component.
    pub members: Vec<String>,
}

/// Result of [`assign_groups`].
#[derive(Debug, Default)]
pub struct Grouping {
    /// One per new member, in input order.
    pub assignments: Vec<Assignment>,
    /// New images that joined an existing group.
    pub joined_existing: usize,
    pub bridges: Vec<Bridge>,
}

/// Assigns groups and splits to `new` images given the `existing` rows (see the module doc for
/// the rules). Existing rows are never changed.
pub fn assign_groups<'a>(
    existing: &[ExistingMember<'a>],
    new: &[NewMember<'a>],
    radius: u32,
    cfg: &SplitConfig,
    external: &ExternalParents<'a>,
) -> Grouping {
    let mut index = NearDupIndex::new(radius);
    for e in existing {
        index.insert(e.phash);
    }
    let n_old = existing.len();
    for m in new {
        index.insert(m.phash);
    }
    let mut uf = UnionFind::new(new.len());
    // Closest existing neighbour of each new image: (rank, group), rank 0 for a key or parent
    // link and 1 + Hamming distance for a pHash one.
    let mut nearest_old: Vec<Option<(u32, &'a str)>> = vec![None; new.len()];
    let mut touched: Vec<BTreeSet<&'a str>> = vec![BTreeSet::new(); new.len()];
    // Group keys and ids, for the distance-0 links.
    let mut old_by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut old_by_id: HashMap<&str, usize> = HashMap::new();
    for (j, e) in existing.iter().enumerate() {
        if let Some(k) = e.key {
            old_by_key.entry(k).or_default().push(j);
        }
        old_by_id.insert(e.id, j);
    }
    let mut new_by_key: HashMap<&str, usize> = HashMap::new();
    let new_by_id: HashMap<&str, usize> = new.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    let mut link_old = |i: usize, g: &'a str, d: u32, touched: &mut Vec<BTreeSet<&'a str>>| {
        touched[i].insert(g);
        if nearest_old[i].is_none_or(|best| (d, g) < best) {
            nearest_old[i] = Some((d, g));
        }
    };
    for (i, m) in new.iter().enumerate() {
        if let Some(k) = m.key {
            match new_by_key.get(k) {
                Some(&first) => uf.union(i, first),
                None => {
                    new_by_key.insert(k, i);
                }
            }
            for &j in old_by_key.get(k).into_iter().flatten() {
                link_old(i, existing[j].group, 0, &mut touched);
            }
        }
        if let Some(p) = m.parent {
            if let Some(&j) = new_by_id.get(p) {
                uf.union(i, j);
            } else if let Some(&j) = old_by_id.get(p) {
                link_old(i, existing[j].group, 0, &mut touched);
            } else if let Some(&(g, _)) = external.get(p) {
                link_old(i, g, 0, &mut touched);
            }
        }
    }
    let mut hits = Vec::new();
    for (i, m) in new.iter().enumerate() {
        index.query(m.phash, &mut hits);
        for &(j, d) in &hits {
            let j = j as usize;
            if j < n_old {
                link_old(i, existing[j].group, d + 1, &mut touched);
            } else if j - n_old != i {
                uf.union(i, j - n_old);
            }
        }
    }
    let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..new.len() {
        comps.entry(uf.find(i)).or_default().push(i);
    }
    let split_of: HashMap<&str, Split> = existing
        .iter()
        .map(|e| (e.group, e.split))
        .chain(external.values().copied())
        .collect();
    let mut out = Grouping {
        assignments: vec![
            Assignment {
                group: String::new(),
                split: Split::Train
            };
            new.len()
        ],
        ..Default::default()
    };
    for members in comps.values() {
        let all_touched: BTreeSet<&str> = members
            .iter()
            .flat_map(|&i| touched[i].iter().copied())
            .collect();
        let nearest = members.iter().filter_map(|&i| nearest_old[i]).min();
        let assignment = match nearest {
            Some((_, g)) => {
                out.joined_existing += members.len();
                if all_touched.len() > 1 {
                    let mut ids: Vec<String> =
                        members.iter().map(|&i| new[i].id.to_string()).collect();
                    ids.sort();
                    out.bridges.push(Bridge {
                        joined: g.to_string(),
                        touched: all_touched.iter().map(|s| s.to_string()).collect(),
                        members: ids,
                    });
                }
                Assignment {
                    group: g.to_string(),
                    split: split_of[g],
                }
            }
            None => {
                let min_id = members.iter().map(|&i| new[i].id).min().unwrap_or_default();
                let group = group_name(min_id);
                let split = split_for_group(&group, cfg);
                Assignment { group, split }
            }
        };
        for &i in members {
            out.assignments[i] = assignment.clone();
        }
    }
    out
}

/// Group id of a new group: the first 16 hex digits of its smallest member id.
pub fn group_name(min_id: &str) -> String {
    min_id.chars().take(16).collect()
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Smaller root wins so components do not depend on the order of unions.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn index_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let base: Vec<u64> = (0..50).map(|_| rng.random()).collect();
        let mut all = Vec::new();
        for b in &base {
            all.push(*b);
            for _ in 0..4 {
                let mut h = *b;
                for _ in 0..rng.random_range(0..10) {
                    h ^= 1 << rng.random_range(0..64);
                }
                all.push(h);
            }
        }
        for radius in [0, 3, 6, 10] {
            let mut idx = NearDupIndex::new(radius);
            for h in &all {
                idx.insert(*h);
            }
            let mut out = Vec::new();
            for q in &all {
                idx.query(*q, &mut out);
                let brute: Vec<(u32, u32)> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| hamming(*q, **h) <= radius)
                    .map(|(i, h)| (i as u32, hamming(*q, *h)))
                    .collect();
                assert_eq!(out, brute, "radius {radius}");
            }
        }
    }

    #[test]
    fn grouping_is_order_independent_and_keeps_existing() {
        let cfg = SplitConfig::default();
        let ids = ["c1", "a2", "b3", "d4"];
        // a2 and c1 are 2 bits apart; b3 is far; d4 is close to the existing group.
        let hashes = [0b1111u64, 0b1100, u64::MAX, 0xF000_0000_0000_0000];
        let existing = [ExistingMember {
            id: "e1",
            phash: 0xF000_0000_0000_0001,
            group: "old",
            split: Split::Test,
            key: None,
        }];
        let new: Vec<NewMember> = ids
            .iter()
            .zip(hashes)
            .map(|(id, phash)| NewMember::new(id, phash))
            .collect();
        let none = ExternalParents::new();
        let g = assign_groups(&existing, &new, 3, &cfg, &none);
        assert_eq!(g.assignments[0], g.assignments[1]);
        assert_eq!(g.assignments[0].group, "a2");
        assert_ne!(g.assignments[2].group, g.assignments[0].group);
        assert_eq!(
            g.assignments[3],
            Assignment {
                group: "old".into(),
                split: Split::Test
            }
        );
        assert_eq!(g.joined_existing, 1);
        let mut rev = new.clone();
        rev.reverse();
        let g2 = assign_groups(&existing, &rev, 3, &cfg, &none);
        let mut back = g2.assignments.clone();
        back.reverse();
        assert_eq!(back, g.assignments);
    }

    #[test]
    fn bridge_joins_nearest_group() {
        let cfg = SplitConfig::default();
        let existing = [
            ExistingMember {
                id: "e1",
                phash: 0,
                group: "zz",
                split: Split::Train,
                key: None,
            },
            ExistingMember {
                id: "e2",
                phash: 0b11_1100,
                group: "aa",
                split: Split::Val,
                key: None,
            },
        ];
        // 1 bit from "zz", 3 bits from "aa".
        let new = [NewMember::new("n", 0b100)];
        let g = assign_groups(&existing, &new, 4, &cfg, &ExternalParents::new());
        assert_eq!(g.assignments[0].group, "zz");
        assert_eq!(g.assignments[0].split, Split::Train);
        assert_eq!(g.bridges.len(), 1);
        assert_eq!(g.bridges[0].touched, vec!["aa", "zz"]);
    }

    #[test]
    fn group_keys_and_parents_link_at_distance_zero() {
        let cfg = SplitConfig::default();
        let far = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let existing = [ExistingMember {
            id: "p-old",
            phash: far(1),
            group: "gold",
            split: Split::Test,
            key: Some("video:7"),
        }];
        let new = [
            // A frame of the same video, looking nothing like the old one.
            NewMember {
                key: Some("video:7"),
                ..NewMember::new("f1", far(2))
            },
            // Two frames of a new video: one group, whatever their hashes.
            NewMember {
                key: Some("video:8"),
                ..NewMember::new("f2", far(3))
            },
            NewMember {
                key: Some("video:8"),
                ..NewMember::new("f3", far(4))
            },
            // Children of a parent in this manifest, in this run, and in another dataset.
            NewMember {
                parent: Some("p-old"),
                ..NewMember::new("c1", far(5))
            },
            NewMember {
                parent: Some("f3"),
                ..NewMember::new("c2", far(6))
            },
            NewMember {
                parent: Some("p-ext"),
                ..NewMember::new("c3", far(7))
            },
            NewMember::new("lone", far(8)),
        ];
        let ext: ExternalParents = [("p-ext", ("gext", Split::Val))].into_iter().collect();
        let g = assign_groups(&existing, &new, 6, &cfg, &ext);
        let a = &g.assignments;
        assert_eq!((a[0].group.as_str(), a[0].split), ("gold", Split::Test));
        assert_eq!(a[1], a[2]);
        // f2, f3 and f3's child c2: named after the smallest id.
        assert_eq!(a[1].group, "c2");
        assert_eq!(a[3], a[0]);
        assert_eq!(a[4], a[2]);
        assert_eq!((a[5].group.as_str(), a[5].split), ("gext", Split::Val));
        assert_eq!(a[6].group, "lone");
        assert!(g.bridges.is_empty());
    }

    /// A frame of video 7 that is also an exact pHash copy of a frame in a group named earlier
    /// ("aa") still joins its video's group.
    #[test]
    fn a_group_key_outranks_an_exact_phash_match() {
        let cfg = SplitConfig::default();
        let existing = [
            ExistingMember {
                id: "e1",
                phash: 0xABCD,
                group: "aa",
                split: Split::Val,
                key: Some("video:3"),
            },
            ExistingMember {
                id: "e2",
                phash: u64::MAX,
                group: "zz",
                split: Split::Train,
                key: Some("video:7"),
            },
        ];
        let new = [NewMember {
            key: Some("video:7"),
            ..NewMember::new("n", 0xABCD)
        }];
        let g = assign_groups(&existing, &new, 4, &cfg, &ExternalParents::new());
        assert_eq!(
            (g.assignments[0].group.as_str(), g.assignments[0].split),
            ("zz", Split::Train)
        );
        assert_eq!(g.bridges.len(), 1);
        assert_eq!(g.bridges[0].touched, vec!["aa", "zz"]);
    }

    #[test]
    fn split_fractions_follow_config() {
        let cfg = SplitConfig {
            train: 0.6,
            val: 0.3,
            test: 0.1,
            salt: "x".into(),
        };
        let mut counts = [0usize; 3];
        for i in 0..20_000 {
            counts[split_for_group(&format!("g{i}"), &cfg) as usize] += 1;
        }
        let f: Vec<f64> = counts.iter().map(|c| *c as f64 / 20_000.0).collect();
        assert!(
            (f[0] - 0.6).abs() < 0.02 && (f[1] - 0.3).abs() < 0.02,
            "{f:?}"
        );
        assert_eq!(split_for_group("g1", &cfg), split_for_group("g1", &cfg));
    }
}
