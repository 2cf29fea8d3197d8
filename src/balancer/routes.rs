//! `groups:` turned into tiers of backend indices for one pool: names
//! resolved against the backends the pool has now (discovered uplinks
//! included), each group that lists backends made one tier, and each
//! tier of a group with `tiers:` either that group's own tier (when it
//! names exactly one group) or a tier of its own over the union.

use super::tier::{Members, Tier, NO_GATE};
use super::{Backend, GroupProbe, GroupTiers};
use crate::config::routing::{default_group, Member};
use crate::config::{Config, Target};

pub(super) struct Routes {
    pub tiers: Vec<Tier>,
    pub groups: Vec<GroupTiers>,
    pub default_group: usize,
    pub direct: Option<usize>,
    /// How many gates the group probes need.
    pub gates: usize,
    pub probes: Vec<GroupProbe>,
}

impl Routes {
    pub fn build(config: &Config, backends: &[Backend]) -> Routes {
        let hidden = backends.iter().any(|b| b.config.hidden);
        let visible = || (0..backends.len()).filter(|&i| !backends[i].config.hidden);
        let mut routes = Routes {
            tiers: Vec::new(),
            groups: Vec::new(),
            default_group: 0,
            direct: None,
            gates: 0,
            probes: Vec::new(),
        };
        if config.groups.is_empty() {
            let members = if hidden {
                Members::List(visible().map(|i| i as u32).collect())
            } else {
                Members::All(backends.len())
            };
            routes.tiers.push(Tier::new(members, config.balancer.algorithm, backends, Vec::new()));
            routes.groups.push(GroupTiers { name: "default".into(), tiers: vec![0] });
        } else {
            let named = |reference: &str| -> Vec<u32> {
                visible()
                    .filter(|&i| Member::names(reference, &backends[i].config.name))
                    .map(|i| i as u32)
                    .collect()
            };
            // Each group that lists backends: its tier, and its gates.
            let mut own_tier = vec![usize::MAX; config.groups.len()];
            for (g, group) in config.groups.iter().enumerate().filter(|(_, g)| !g.tiered) {
                let mut members: Vec<u32> = Vec::new();
                for m in group.tiers.iter().flatten() {
                    if let Member::Backends(reference) = m {
                        for i in named(reference) {
                            if !members.contains(&i) {
                                members.push(i);
                            }
                        }
                    }
                }
                let gates = if group.test_url.is_some() {
                    let first = routes.gates as u32;
                    routes.gates += members.len();
                    routes.probes.push(GroupProbe { group: g, tier: routes.tiers.len(), first_gate: first });
                    (first..first + members.len() as u32).collect()
                } else {
                    Vec::new()
                };
                own_tier[g] = routes.tiers.len();
                routes.tiers.push(Tier::new(Members::List(members), group.algorithm, backends, gates));
            }
            for (g, group) in config.groups.iter().enumerate() {
                if !group.tiered {
                    routes.groups.push(GroupTiers { name: group.name.clone(), tiers: vec![own_tier[g]] });
                    continue;
                }
                let mut tiers = Vec::with_capacity(group.tiers.len());
                for tier in &group.tiers {
                    if let [Member::Group(k)] = tier.as_slice() {
                        tiers.push(own_tier[*k]);
                        continue;
                    }
                    let (mut members, mut gates): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
                    let mut add = |i: u32, gate: u32| {
                        if !members.contains(&i) {
                            members.push(i);
                            gates.push(gate);
                        }
                    };
                    for m in tier {
                        match m {
                            Member::Group(k) => {
                                let own = &routes.tiers[own_tier[*k]];
                                for p in 0..own.len() {
                                    add(own.backend(p) as u32, own.gates.get(p).copied().unwrap_or(NO_GATE));
                                }
                            }
                            Member::Backends(reference) => {
                                named(reference).into_iter().for_each(|i| add(i, NO_GATE))
                            }
                        }
                    }
                    if gates.iter().all(|&g| g == NO_GATE) {
                        gates.clear();
                    }
                    tiers.push(routes.tiers.len());
                    routes.tiers.push(Tier::new(Members::List(members), group.algorithm, backends, gates));
                }
                routes.groups.push(GroupTiers { name: group.name.clone(), tiers });
            }
            routes.default_group = default_group(&config.groups);
        }
        // The rules' `direct`: the first direct backend (one added for the
        // rules if none was configured).
        if let Some(i) = backends.iter().position(|b| b.config.target == Target::Direct) {
            routes.direct = Some(routes.tiers.len());
            routes.tiers.push(Tier::new(
                Members::List(vec![i as u32]),
                crate::config::Algorithm::Roundrobin,
                backends,
                Vec::new(),
            ));
        }
        routes
    }
}
