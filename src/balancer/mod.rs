//! Picking a backend for each new connection, and what picking learns.
//!
//! [`Pool::select`] takes no global lock: the algorithms read and bump one
//! `AtomicUsize` (round robin, weighted), step an `AtomicU32` xorshift
//! (random), or read each backend's atomics (active count, latency EMA,
//! circuit state). The only locks on the way are a sticky-table shard
//! (one of 64, only with `sticky_session_ttl`) and nothing else.
//!
//! Filters, in order:
//! 1. Sticky: a client (or destination) seen within `sticky_session_ttl`
//!    goes back to its backend while that backend is usable.
//! 2. Usable: circuit CLOSED and in the active set (`max_active_backends`),
//!    and not already tried for this connection; those that have answered
//!    before those never heard from (the start-up probes are on their way).
//!    When no backend is usable, every untried one is, for one last try
//!    ([`Pick::panic`]): refusing everyone would make an uplink outage last
//!    until the next probe instead of the next attempt.
//! 3. `max_latency`: skip backends whose latency EMA is higher; if that
//!    leaves none, take the fastest.
//! 4. The algorithm, which spreads an ineligible backend's share evenly
//!    over the others (see [`Pool::pick`]).
//!
//! Results come back through [`Pool::report`], which feeds the backend's
//! health, logs state changes, detects uplink outages, recomputes the
//! active set on a circuit change, and asks the health checker for an
//! early probe after a failure.

mod ewma;
pub mod learned;
mod routes;
mod tier;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::routing::{Action, Query};
use crate::config::{Algorithm, BackendConfig, Config, Health as HealthConfig, StickyKey, Target, Uplink};
use crate::health::{BackendHealth, Judging, Kicks, ProbeGauge, Recorded, Source, State, Verdict};
use crate::rng::Rng;
use crate::socks5::Address;
use crate::stats::BackendStats;
use ewma::PeakEwma;
use learned::Learned;
use routes::Routes;
use tier::{Tier, NO_GATE};

/// One backend: its settings, its traffic counters and its health.
#[derive(Debug)]
pub struct Backend {
    pub config: BackendConfig,
    pub stats: Arc<BackendStats>,
    pub health: Arc<BackendHealth>,
}

/// How a backend reaches its proxy: directly, or through an uplink of the
/// same pool (`via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    /// Through the uplink at this index.
    Uplink(usize),
    /// `via` names an uplink that does not exist now (an `interfaces:
    /// auto` interface that is down or gone): the backend is not picked.
    Missing,
}

/// What a connection offers for sticky lookups.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub destination: &'a Address,
}

/// Where a connection's backends come from: a group (by index, as in
/// `groups:`; 0 is the implicit group without them), or the rules'
/// `direct` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Group(usize),
    Direct,
}

/// What the rules decided for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Route(Route),
    /// `action: block`, by the rule at this index.
    Block(usize),
}

/// A group as the pool runs it: its tiers, in order, by index.
#[derive(Debug)]
struct GroupTiers {
    name: String,
    tiers: Vec<usize>,
}

/// A group with its own `test_url`: its tier and where its gates start.
#[derive(Debug, Clone)]
pub(crate) struct GroupProbe {
    pub group: usize,
    pub tier: usize,
    pub first_gate: u32,
}

/// The backends of one config snapshot and the state to pick among them.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    /// Per backend, how it reaches its proxy.
    via: Vec<Via>,
    tiers: Vec<Tier>,
    groups: Vec<GroupTiers>,
    /// The group rules fall back to.
    default_group: usize,
    /// The tier of the rules' `direct` action.
    direct: Option<usize>,
    /// Per group-probed member, whether its group's probe failed
    /// through it (it is then down for that group only).
    gates: Vec<AtomicBool>,
    group_probes: Vec<GroupProbe>,
    /// Per backend, for `p2c` and `learned`.
    ewma: Vec<PeakEwma>,
    latency_decay: Duration,
    /// Per site outcomes, when some tier is `learned` (kept across reloads).
    learned: Option<Arc<Learned>>,
    /// Some tier reads the destination's site.
    needs_site: bool,
    /// For `random` and `p2c`.
    rng: Rng,
    max_latency: Option<Duration>,
    max_active: Option<usize>,
    sticky: Option<StickyTable>,
    sticky_key: StickyKey,
    /// Serializes active-set recomputation (never on the pick path).
    active_set: Mutex<()>,
    outage: OutageDetector,
    /// How results are judged (passive monitoring, the check interval).
    judging: Judging,
    /// Wakes the health checker early (after a failure, a state change).
    kicks: Kicks,
    /// Health probes in flight (the checker bounds them).
    probes: ProbeGauge,
    /// Every backend has been heard from once (or cannot be judged yet):
    /// until then a never-answered backend's going down is told in the
    /// round's one summary line, not a line of its own each (a range of
    /// a thousand dead ports would fill a router's log ring at every boot).
    first_round_done: AtomicBool,
}

impl Pool {
    /// Builds a pool for `config`.
    pub fn new(config: &Config) -> Pool {
        Pool::reloaded(config, None)
    }

    /// Builds a pool for a reloaded `config`. A backend whose settings did
    /// not change keeps its traffic counters, and also its health (breaker
    /// state, windows) when the health settings did not change either.
    pub fn reloaded(config: &Config, previous: Option<(&Pool, &HealthConfig)>) -> Pool {
        let now = Instant::now();
        // Each old backend is carried over at most once (a config may list
        // the same backend twice).
        let mut taken = vec![false; previous.map_or(0, |(p, _)| p.backends.len())];
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| {
                let old = previous.and_then(|(pool, health)| {
                    let k = (0..pool.backends.len())
                        .find(|&k| !taken[k] && pool.backends[k].config.same_backend(b))?;
                    taken[k] = true;
                    Some((&pool.backends[k], *health == config.health))
                });
                // Every new backend is probed at once: one that has never
                // answered is not presumed healthy (docs/health.md). The
                // checker runs at most MAX_CONCURRENT_PROBES at a time, so a
                // thousand backends do not stampede.
                let fresh_health = || Arc::new(BackendHealth::new(&config.health, now));
                match old {
                    Some((old, same_health)) => Backend {
                        config: b.clone(),
                        stats: Arc::clone(&old.stats),
                        health: if same_health { Arc::clone(&old.health) } else { fresh_health() },
                    },
                    None => Backend { config: b.clone(), stats: Arc::default(), health: fresh_health() },
                }
            })
            .collect();
        let via = backends
            .iter()
            .map(|b| match &b.config.via {
                None => Via::Direct,
                Some(name) => backends
                    .iter()
                    .position(|u| matches!(u.config.target, Target::Uplink(_)) && u.config.name == *name)
                    .map_or(Via::Missing, Via::Uplink),
            })
            .collect();
        let max_active = config.balancer.max_active_backends.map(|n| n.get() as usize);
        match (max_active, previous.is_some()) {
            (None, _) => backends.iter().for_each(|b| b.health.set_active(true)),
            (Some(limit), false) => {
                for (i, b) in backends.iter().enumerate() {
                    b.health.set_active(i < limit);
                }
            }
            // Carried-over members stay in; recompute_active_set (at the
            // end) fills or trims to the limit.
            (Some(_), true) => {}
        }
        let routes = Routes::build(config, &backends);
        let learned = routes.tiers.iter().any(|t| t.algorithm == Algorithm::Learned).then(|| {
            previous.and_then(|(p, _)| p.learned.clone()).unwrap_or_else(|| Arc::new(Learned::new()))
        });
        let needs_site = routes
            .tiers
            .iter()
            .any(|t| matches!(t.algorithm, Algorithm::StickyDestination | Algorithm::Learned));
        let pool = Pool {
            ewma: backends.iter().map(|_| PeakEwma::default()).collect(),
            backends,
            via,
            tiers: routes.tiers,
            groups: routes.groups,
            default_group: routes.default_group,
            direct: routes.direct,
            gates: (0..routes.gates).map(|_| AtomicBool::new(false)).collect(),
            group_probes: routes.probes,
            latency_decay: config.balancer.latency_decay,
            learned,
            needs_site,
            rng: Rng::new(),
            max_latency: config.balancer.max_latency,
            max_active,
            sticky: config.balancer.sticky_session_ttl.map(StickyTable::new),
            sticky_key: config.balancer.sticky_key,
            active_set: Mutex::new(()),
            outage: OutageDetector::new(outage_window(config)),
            judging: Judging::new(&config.health),
            kicks: Kicks::new(),
            probes: ProbeGauge::default(),
            first_round_done: AtomicBool::new(false),
        };
        if previous.is_some() {
            pool.recompute_active_set();
        }
        pool
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// How backend `i` reaches its proxy.
    pub fn via(&self, i: usize) -> Via {
        self.via.get(i).copied().unwrap_or(Via::Direct)
    }

    /// The uplink backend `i` is pinned to, if any and if it exists now.
    pub fn uplink_of(&self, i: usize) -> Option<&Uplink> {
        match self.via(i) {
            Via::Uplink(u) => match &self.backends[u].config.target {
                Target::Uplink(uplink) => Some(uplink),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether backend `i` can be reached at all: not through a missing
    /// uplink, nor one whose link is down. Even panic mode skips the rest.
    fn reachable(&self, i: usize) -> bool {
        match self.via(i) {
            Via::Direct => !self.backends[i].health.link_down(),
            Via::Uplink(u) => !self.backends[u].health.link_down() && !self.backends[i].health.link_down(),
            Via::Missing => false,
        }
    }

    /// Whether backend `i` is a proxy behind an uplink that is down, open
    /// or missing: it can be neither used nor judged until the uplink is
    /// back (the uplink's own probes run meanwhile).
    pub fn cut_off(&self, i: usize) -> bool {
        match self.via(i) {
            Via::Direct => false,
            Via::Uplink(u) => !self.backends[u].health.usable(),
            Via::Missing => true,
        }
    }

    /// Whether backend `i` may take new connections: its own health and
    /// that of the uplink it is pinned to.
    pub(crate) fn usable(&self, i: usize) -> bool {
        self.backends[i].health.usable()
            && match self.via(i) {
                Via::Direct => true,
                Via::Uplink(u) => self.backends[u].health.usable(),
                Via::Missing => false,
            }
    }

    /// The default group's first tier's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.tier_of(Route::Group(self.default_group), 0).map_or(Algorithm::Roundrobin, |t| t.algorithm)
    }

    fn tiers_of(&self, route: Route) -> &[usize] {
        match route {
            Route::Group(g) => self.groups.get(g).map_or(&[], |g| g.tiers.as_slice()),
            Route::Direct => self.direct.as_slice(),
        }
    }

    fn tier_of(&self, route: Route, k: usize) -> Option<&Tier> {
        self.tiers_of(route).get(k).map(|&t| &self.tiers[t])
    }

    /// What the rules decide for a connection: the first matching rule's
    /// action, or the default group.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn decide(&self, config: &Config, q: &Query<'_>) -> Decision {
        match crate::config::routing::decide(&config.rules, q).map(|r| (r, config.rules[r].action)) {
            None => Decision::Route(Route::Group(self.default_group)),
            Some((_, Action::Group(g))) => Decision::Route(Route::Group(g)),
            Some((_, Action::Direct)) => Decision::Route(Route::Direct),
            Some((r, Action::Block)) => Decision::Block(r),
        }
    }

    /// The default route (no rule consulted).
    pub fn default_route(&self) -> Route {
        Route::Group(self.default_group)
    }

    /// Groups by name, with each tier's backends, for the dashboard.
    pub fn group_names(&self) -> impl Iterator<Item = (&str, Vec<Vec<usize>>)> + '_ {
        self.groups
            .iter()
            .map(|g| (g.name.as_str(), g.tiers.iter().map(|&t| self.tiers[t].backends().collect()).collect()))
    }

    /// Which tier of `route` takes new connections now: the first with a
    /// usable backend (`None`: none has one).
    pub fn active_tier(&self, route: Route) -> Option<usize> {
        self.tiers_of(route).iter().position(|&t| {
            let tier = &self.tiers[t];
            (0..tier.len()).any(|p| {
                self.gate_open(tier.gates.get(p).copied().unwrap_or(NO_GATE)) && self.usable(tier.backend(p))
            })
        })
    }

    /// Whether gate `g` lets its member through (its group's probe has
    /// not failed through it).
    fn gate_open(&self, g: u32) -> bool {
        g == NO_GATE || self.gates.get(g as usize).is_none_or(|down| !down.load(Ordering::Relaxed))
    }

    /// The groups with their own `test_url`.
    pub(crate) fn group_probes(&self) -> &[GroupProbe] {
        &self.group_probes
    }

    /// The backends of a probed group, with their gates.
    pub(crate) fn probe_members(&self, probe: &GroupProbe) -> impl Iterator<Item = (usize, u32)> + '_ {
        let (tier, first) = (&self.tiers[probe.tier], probe.first_gate);
        (0..tier.len()).map(move |p| (tier.backend(p), first + p as u32))
    }

    /// Sets gate `g` from its group probe; returns whether it changed.
    pub(crate) fn set_gate(&self, g: u32, down: bool) -> bool {
        self.gates.get(g as usize).is_some_and(|gate| gate.swap(down, Ordering::Relaxed) != down)
    }

    /// The name of group `g`.
    pub fn group_name(&self, g: usize) -> &str {
        self.groups.get(g).map_or("", |g| g.name.as_str())
    }

    /// The per-site table, if some group learns.
    pub fn learned(&self) -> Option<&Learned> {
        self.learned.as_deref()
    }

    /// Feeds the per-site table (when there is one) with one connection's
    /// outcome through backend `i` to `dest`.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn learn(&self, i: usize, dest: &Address, outcome: learned::Outcome) {
        let Some(table) = &self.learned else { return };
        if let Some(site) = learned::site_of(dest) {
            table.record(site, learned::backend_key(&self.backends[i].config.name), outcome);
        }
    }

    /// Whether an uplink outage is in progress (see [`OutageDetector`]).
    pub fn outage(&self) -> bool {
        self.outage.active.load(Ordering::Relaxed)
    }

    /// The health probes in flight.
    pub fn probes(&self) -> &ProbeGauge {
        &self.probes
    }

    /// The receiver the health checker waits on besides its timer.
    pub(crate) fn kicks(&self) -> &Kicks {
        &self.kicks
    }

    /// Wakes the health checker (a no-op if a wake-up is already pending).
    pub(crate) fn kick(&self) {
        self.kicks.kick();
    }

    /// Picks a backend of `route` for a client connection, never one
    /// `skip` names (those already tried for it). Tier by tier: backends
    /// known to work come first, then those never heard from (a probe
    /// round is still on its way); the next tier only when neither is
    /// left; and only when no tier has either, the open circuits
    /// ([`Pick::panic`]), tier by tier.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn select(&self, route: Route, client: Client<'_>, skip: &dyn Fn(usize) -> bool) -> Option<Pick> {
        let now = Instant::now();
        let tiers = self.tiers_of(route);
        let key = self.sticky.as_ref().map(|_| sticky_hash(self.sticky_key, &client));
        let site = if self.needs_site { learned::site_of(client.destination).map(|(h, _)| h) } else { None };
        let usable = |i: usize| !skip(i) && self.usable(i);
        if let (Some(table), Some(key)) = (&self.sticky, key) {
            if let Some(i) = table.get(key, now).filter(|&i| i < self.backends.len() && usable(i)) {
                // Only where this route may go, and in the first tier that
                // has a usable backend.
                let first = tiers.iter().find(|&&t| self.tiers[t].backends().any(usable));
                if first.is_some_and(|&t| self.tiers[t].contains(i)) {
                    return Some(Pick { index: i, panic: false });
                }
            }
        }
        let known = |i: usize| usable(i) && self.backends[i].health.answered();
        let unknown = |i: usize| usable(i) && !self.backends[i].health.answered();
        let picked = tiers
            .iter()
            .find_map(|&t| {
                let tier = &self.tiers[t];
                self.pick_filtered(tier, site, &known).or_else(|| self.pick_filtered(tier, site, &unknown))
            })
            .map(|index| Pick { index, panic: false })
            .or_else(|| {
                let index = tiers.iter().find_map(|&t| {
                    self.pick_filtered(&self.tiers[t], site, &|i| !skip(i) && self.reachable(i))
                })?;
                Some(Pick { index, panic: true })
            });
        if let (Some(table), Some(key), Some(Pick { index, panic: false })) = (&self.sticky, key, picked) {
            table.put(key, index, now);
        }
        picked
    }

    /// `max_latency`, then the tier's algorithm.
    fn pick_filtered(
        &self,
        tier: &Tier,
        site: Option<u64>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let Some(max) = self.max_latency else {
            return tier.pick(self, site, eligible);
        };
        let fast = |i: usize| eligible(i) && self.backends[i].health.latency().is_none_or(|l| l <= max);
        tier.pick(self, site, &fast).or_else(|| {
            // Every eligible backend is slower than max_latency: the
            // fastest of them beats refusing the client.
            tier.backends().filter(|&i| eligible(i)).min_by_key(|&i| self.backends[i].health.latency())
        })
    }

    /// Picks a backend of the default group's first tier among those
    /// `eligible` accepts, with its algorithm alone; `None` when it
    /// accepts none.
    pub fn pick(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.tier_of(self.default_route(), 0)?.pick(self, None, eligible)
    }

    /// Records a result for backend `i`, logs what changed (a state
    /// change once, a backend that stays down once an hour), watches for
    /// an uplink outage, and asks the checker for an early probe after a
    /// failed real connection.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn report(&self, i: usize, source: Source, verdict: &Verdict) -> Recorded {
        let backend = &self.backends[i];
        if source == Source::Traffic {
            backend.stats.attempts.add(1);
            match verdict {
                Verdict::Failed(f) if f.timeout => backend.stats.timeouts.add(1),
                Verdict::Failed(_) => backend.stats.failures.add(1),
                _ => {}
            }
        }
        self.judge(i, source, verdict)
    }

    /// A tunnel through backend `i` stalled: the client sent data and no
    /// byte came back within `timeout`. A failure of real traffic for the
    /// breaker and the window, counted as a stall (the attempt itself
    /// succeeded and was counted then).
    pub fn report_stall(&self, i: usize, timeout: Duration) -> Recorded {
        self.backends[i].stats.stalls.add(1);
        let reason = format!("stalled: no reply within {}", crate::config::human(timeout));
        self.judge(i, Source::Traffic, &Verdict::Failed(crate::health::Failure::timed_out(reason)))
    }

    /// [`Pool::report`] past the traffic counters.
    fn judge(&self, i: usize, source: Source, verdict: &Verdict) -> Recorded {
        let backend = &self.backends[i];
        let now = Instant::now();
        let recorded = backend.health.record(now, source, verdict, self.judging);
        if let Verdict::Success(Some(latency)) = verdict {
            self.ewma[i].observe(*latency, self.latency_decay);
        }
        let name = &backend.config.name;
        let reason = match verdict {
            Verdict::Failed(f) => f.reason.as_str(),
            _ => "",
        };
        if recorded.first_answer && recorded.transition.is_none() {
            log::debug!("backend {name}: up");
        }
        if let Some(t) = recorded.transition {
            match t.to {
                State::Open if t.from == State::Closed => {
                    let next = crate::config::human(backend.health.backoff());
                    if backend.health.answered() || self.first_round_done.load(Ordering::Relaxed) {
                        log::warn!("backend {name}: down ({reason}); next probe in {next}");
                    } else {
                        log::debug!(
                            "backend {name}: down at its first check ({reason}); next probe in {next}"
                        );
                    }
                    self.outage.on_down(&self.backends, now);
                }
                State::Open => log::debug!("backend {name}: recovery probe failed ({reason})"),
                State::Closed => {
                    match recorded.down_for {
                        Some(d) => {
                            log::info!("backend {name}: up again after {} down", crate::config::human(d))
                        }
                        None => log::info!("backend {name}: up"),
                    }
                    self.outage.on_up(&self.backends, name);
                }
                State::HalfOpen => log::debug!("backend {name}: testing"),
            }
            self.recompute_active_set();
        }
        if let Some(n) = recorded.still_down {
            log::info!("backend {name}: still down; {n} more failure(s) in the last hour (last: {reason})");
        }
        let failed = matches!(verdict, Verdict::Failed(_));
        if failed && source == Source::Traffic {
            // A failed real connection: check this backend now rather than
            // at its next scheduled probe.
            backend.health.probe_soon(now);
            self.kick();
        } else if recorded.transition.is_some() {
            self.kick();
        }
        recorded
    }

    /// Once every backend that can be judged has been heard from, logs the
    /// first round in one line: how many are up, and the others by reason
    /// (a few names each). Does nothing before that, or after it once.
    pub(crate) fn finish_first_round(&self) {
        if self.first_round_done.load(Ordering::Relaxed) {
            return;
        }
        let mut up = 0;
        // (reason, names shown, how many)
        let mut down: Vec<(String, Vec<&str>, usize)> = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            if b.health.answered() {
                up += 1;
                continue;
            }
            if b.health.state() == State::Closed && !self.cut_off(i) {
                return; // still waiting for this one
            }
            let reason = b.health.last_error().unwrap_or_else(|| "not reachable yet".into());
            match down.iter_mut().find(|(r, _, _)| *r == reason) {
                Some((_, names, n)) => {
                    *n += 1;
                    if names.len() < FIRST_ROUND_NAMES {
                        names.push(&b.config.name);
                    }
                }
                None => down.push((reason, vec![&b.config.name], 1)),
            }
        }
        if self.first_round_done.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut line = format!("first probes done: {up} of {} backend(s) up", self.backends.len());
        for (reason, names, n) in &down {
            let more =
                if *n > names.len() { format!(" and {} more", n - names.len()) } else { String::new() };
            line.push_str(&format!("; {n} down ({reason}): {}{more}", names.join(", ")));
        }
        if down.is_empty() {
            log::info!("{line}");
        } else {
            log::warn!("{line}");
        }
    }

    /// With `max_active_backends`: keep the members whose circuit is still
    /// closed, fill free places with the best other closed backends, and
    /// let a clearly better outsider (half the latency and 20 ms less)
    /// replace the slowest member. Without the setting, does nothing.
    pub fn recompute_active_set(&self) {
        let Some(limit) = self.max_active else { return };
        let _one_at_a_time = self.active_set.lock().unwrap_or_else(|e| e.into_inner());
        let health = |i: usize| &self.backends[i].health;
        // Unmeasured backends rank after measured ones, then config order.
        let rank = |i: usize| (health(i).latency().unwrap_or(Duration::MAX), i);
        let closed = |i: usize| health(i).state() == State::Closed;
        let mut members: Vec<usize> =
            (0..self.backends.len()).filter(|&i| health(i).is_active() && closed(i)).collect();
        let mut outsiders: Vec<usize> =
            (0..self.backends.len()).filter(|&i| !health(i).is_active() && closed(i)).collect();
        outsiders.sort_by_key(|&i| rank(i));
        if members.len() > limit {
            // The limit went down (a reload): keep the best.
            members.sort_by_key(|&i| rank(i));
            members.truncate(limit);
        }
        let mut outsiders = outsiders.into_iter().peekable();
        while members.len() < limit {
            match outsiders.next() {
                Some(i) => members.push(i),
                None => break,
            }
        }
        if let (Some(&best), Some(&worst)) = (outsiders.peek(), members.iter().max_by_key(|&&i| rank(i))) {
            if let (Some(b), Some(w)) = (health(best).latency(), health(worst).latency()) {
                if b * 2 < w && b + Duration::from_millis(20) < w {
                    members.retain(|&i| i != worst);
                    members.push(best);
                }
            }
        }
        for i in 0..self.backends.len() {
            health(i).set_active(members.contains(&i));
        }
    }
}

/// Names listed per reason in the first round's summary line.
const FIRST_ROUND_NAMES: usize = 6;

/// The span within which backends must all go down to make an outage:
/// twice the connect timeout (10 s by default), and at least 1 s.
fn outage_window(config: &Config) -> Duration {
    (config.health.connect_timeout * 2).max(Duration::from_secs(1))
}

/// Backends within this much latency of the fastest (or a fifth of its
/// latency, if more) share `lowest_latency`'s picks: differences smaller
/// than that are noise, and one backend taking everything is not.
pub const LATENCY_BAND: Duration = Duration::from_millis(5);

/// What [`Pool::select`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// Nothing usable was left, and this backend's circuit is open: a
    /// last try (panic mode), at most one per client connection.
    pub panic: bool,
}

/// Tells an uplink outage from sick backends. An outage begins when a
/// backend goes down and leaves no closed circuit at all, and at least
/// three backends (all of them, if fewer; never with one alone) went down
/// within the window: the problem is upstream of all of them. A backend
/// that went down on a refusal does not count: its host answered, so the
/// way to it works.
///
/// While it lasts, the backends it took down keep probing at the base
/// recovery interval, so that service resumes within one
/// `recovery_interval` once the uplink is back. Backends that were
/// already down keep their backoff. It ends when any backend answers.
/// Each edge is logged once.
#[derive(Debug)]
struct OutageDetector {
    window: Duration,
    active: AtomicBool,
    /// When the current outage began.
    since: Mutex<Option<Instant>>,
}

impl OutageDetector {
    fn new(window: Duration) -> Self {
        OutageDetector { window, active: AtomicBool::new(false), since: Mutex::new(None) }
    }

    /// A backend went down: does that start an outage? (The caller kicks
    /// the checker on every transition, so the pulled-in recovery timers
    /// are seen at once.)
    fn on_down(&self, backends: &[Backend], now: Instant) {
        if self.active.load(Ordering::Relaxed)
            || backends.len() < 2
            || backends.iter().any(|b| b.health.state() == State::Closed)
        {
            return;
        }
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<usize> =
            (0..backends.len()).filter(|&i| backends[i].health.went_down_within(now, self.window)).collect();
        if recent.len() < backends.len().min(3) || self.active.swap(true, Ordering::Relaxed) {
            return;
        }
        *since = Some(now);
        for &i in &recent {
            backends[i].health.hold(now);
        }
        log::warn!(
            "uplink outage: {} backend(s) went down within {} and none is left; \
             probing them every recovery interval until one answers",
            recent.len(),
            crate::config::human(self.window)
        );
    }

    /// A backend came back up: any outage is over.
    fn on_up(&self, backends: &[Backend], name: &str) {
        if !self.active.swap(false, Ordering::Relaxed) {
            return;
        }
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner()).take();
        for b in backends {
            b.health.release();
        }
        let lasted = since.map(|s| crate::config::human(s.elapsed())).unwrap_or_default();
        log::info!("uplink outage over after {lasted}: backend {name} answered");
    }
}

/// Shards of the sticky table: a connection locks one shard, never the
/// whole table.
const STICKY_SHARDS: usize = 64;
/// Entries per shard: 64 × 64 = 4,096 sticky sessions in at most ~100 KiB.
const STICKY_PER_SHARD: usize = 64;

#[derive(Debug, Clone, Copy)]
struct StickyEntry {
    key: u64,
    backend: u32,
    last_used: Instant,
}

/// Bounded client → backend memory with least-recently-used eviction.
/// An entry lives `ttl` past its last use.
#[derive(Debug)]
struct StickyTable {
    ttl: Duration,
    shards: Vec<Mutex<heapless::Vec<StickyEntry, STICKY_PER_SHARD>>>,
}

fn sticky_hash(kind: StickyKey, client: &Client<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    match kind {
        StickyKey::Client => client.ip.hash(&mut h),
        StickyKey::Destination => client.destination.hash(&mut h),
    }
    h.finish()
}

impl StickyTable {
    fn new(ttl: Duration) -> Self {
        StickyTable { ttl, shards: (0..STICKY_SHARDS).map(|_| Mutex::new(heapless::Vec::new())).collect() }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, heapless::Vec<StickyEntry, STICKY_PER_SHARD>> {
        self.shards[(key % STICKY_SHARDS as u64) as usize].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: u64, now: Instant) -> Option<usize> {
        let mut shard = self.shard(key);
        let pos = shard.iter().position(|e| e.key == key)?;
        if now.saturating_duration_since(shard[pos].last_used) > self.ttl {
            shard.swap_remove(pos);
            return None;
        }
        shard[pos].last_used = now;
        Some(shard[pos].backend as usize)
    }

    fn put(&self, key: u64, backend: usize, now: Instant) {
        let mut shard = self.shard(key);
        let entry = StickyEntry { key, backend: backend as u32, last_used: now };
        if let Some(e) = shard.iter_mut().find(|e| e.key == key) {
            *e = entry;
            return;
        }
        if shard.is_full() {
            // Least recently used goes (expired entries are the oldest).
            if let Some(lru) = (0..shard.len()).min_by_key(|&i| shard[i].last_used) {
                shard.swap_remove(lru);
            }
        }
        let _ = shard.push(entry);
    }
}

/// nginx's smooth weighted round robin, run for one full period: each
/// step adds every weight to its backend's running score, picks the
/// highest score, and takes the total off the winner. Weights are divided
/// by their common divisor first, so `[2, 2]` costs two entries, not four.
/// The config's validation bounds the schedule ([`check_weights`]).
pub fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u32> {
    let divisor = crate::config::check_weights(weights).unwrap_or(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut score = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            score[i] += w;
            if score[i] > score[best] {
                best = i;
            }
        }
        score[best] -= total;
        order.push(best as u32);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Failure, Source};

    impl Pool {
        fn select_index(&self, client: Client<'_>, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
            self.select(self.default_route(), client, skip).map(|p| p.index)
        }
    }

    fn ok(p: &Pool, i: usize, latency: Duration) {
        p.report(i, Source::Probe, &Verdict::Success(Some(latency)));
    }

    fn pool_yaml(extra: &str, weights: &[u32], algorithm: &str) -> Pool {
        let mut yaml = format!("mode: socks5\nbalancer:\n  algorithm: {algorithm}\n{extra}backends:\n");
        for w in weights {
            yaml.push_str(&format!("  - {{direct: true, weight: {w}}}\n"));
        }
        Pool::new(&Config::from_yaml(&yaml).unwrap())
    }

    fn pool(weights: &[u32], algorithm: Algorithm) -> Pool {
        pool_yaml("", weights, &algorithm.to_string())
    }

    fn counts(p: &Pool, picks: usize) -> Vec<usize> {
        let mut c = vec![0; p.backends().len()];
        for _ in 0..picks {
            c[p.pick(&|_| true).unwrap()] += 1;
        }
        c
    }

    const LOCAL: Address = Address::UNSPECIFIED;

    #[test]
    fn a_proxy_behind_a_down_uplink_is_cut_off_and_never_picked() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - interface: wan1\n  - interface: wan2\n  - {address: 127.0.0.1:1080, via: wan2}\n",
        )
        .unwrap();
        let p = Pool::new(&c);
        let who = Client { ip: [127, 0, 0, 1].into(), destination: &LOCAL };
        assert_eq!((p.via(2), p.via(0)), (Via::Uplink(1), Via::Direct));
        assert!(!p.cut_off(2));
        let picks: Vec<usize> = (0..6).filter_map(|_| p.select_index(who, &|_| false)).collect();
        assert!(picks.contains(&2), "{picks:?}");
        // wan2's link goes down: neither it nor the proxy behind it is
        // picked, even when nothing else is usable (panic mode).
        assert!(p.backends()[1].health.set_link_down(true, Instant::now()));
        assert!(p.cut_off(2));
        for _ in 0..6 {
            assert_eq!(p.select_index(who, &|_| false), Some(0));
        }
        p.backends()[0].health.set_active(false);
        assert_eq!(p.select_index(who, &|i| i == 0), None, "panic mode skips unreachable backends");
        // Back up: the proxy returns.
        assert!(p.backends()[1].health.set_link_down(false, Instant::now()));
        assert!(!p.cut_off(2));
        assert!(p.select_index(who, &|i| i != 2).is_some() && p.select_index(who, &|i| i != 1).is_some());
    }

    #[test]
    fn via_an_uplink_auto_has_not_found_is_missing() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - interfaces: auto\n  - {address: 127.0.0.1:1080, via: wan9}\n",
        );
        // `interfaces: auto` is Linux-only; elsewhere the config is refused.
        let Ok(c) = c else { return };
        let p = Pool::new(&c.with_discovered(&["wan1".into()]));
        assert_eq!(p.via(1), Via::Missing);
        assert!(p.cut_off(1));
    }

    fn client(ip: [u8; 4]) -> Client<'static> {
        Client { ip: IpAddr::from(ip), destination: &LOCAL }
    }

    fn fail(p: &Pool, i: usize, times: usize) {
        for _ in 0..times {
            p.report(i, Source::Traffic, &Verdict::Failed(Failure::new("closed the connection")));
        }
    }

    #[test]
    fn round_robin_is_exactly_even() {
        assert_eq!(counts(&pool(&[1, 1, 1, 1], Algorithm::Roundrobin), 400), [100; 4]);
    }

    #[test]
    fn round_robin_spreads_a_dead_backends_share_evenly() {
        // Regression: scanning on from a dead backend's slot gave its turn
        // to the next backend, which then carried twice the load.
        let p = pool(&[1, 1, 1, 1, 1], Algorithm::Roundrobin);
        let mut c = [0usize; 5];
        for _ in 0..400 {
            c[p.pick(&|i| i != 2).unwrap()] += 1;
        }
        assert_eq!(c, [100, 100, 0, 100, 100]);
    }

    #[test]
    fn weighted_follows_weights_exactly_per_period() {
        assert_eq!(counts(&pool(&[5, 1, 1], Algorithm::Weighted), 700), [500, 100, 100]);
    }

    #[test]
    fn weighted_schedule_is_smooth() {
        // nginx's documented example: weights 5,1,1 give a a b a c a a;
        // never the 5 a's in a row of plain weighted round robin.
        let order = smooth_weighted_schedule(&[5, 1, 1]);
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_schedule_reduces_by_gcd_and_caps_size() {
        assert_eq!(smooth_weighted_schedule(&[4, 2]).len(), 3);
        let big = vec![1000; 100];
        assert_eq!(smooth_weighted_schedule(&big).len(), 100);
        let mut uneven = vec![999; 100];
        uneven[0] = 1000;
        assert!(crate::config::check_weights(&uneven).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn random_covers_every_backend_roughly_evenly() {
        let c = counts(&pool(&[1, 1, 1, 1], Algorithm::Random), 4000);
        for n in c {
            assert!((700..1300).contains(&n), "{n} of 4000 is far from 1000");
        }
    }

    #[test]
    fn least_connections_prefers_idle_backends() {
        let p = pool(&[1, 1, 1], Algorithm::LeastConnections);
        let _busy0 = crate::stats::ActiveGuard::new(&p.backends()[0].stats);
        let _busy2 = crate::stats::ActiveGuard::new(&p.backends()[2].stats);
        for _ in 0..5 {
            assert_eq!(p.pick(&|_| true), Some(1));
        }
    }

    #[test]
    fn lowest_latency_tries_unmeasured_then_the_fastest() {
        let p = pool(&[1, 1, 1], Algorithm::LowestLatency);
        ok(&p, 0, Duration::from_millis(50));
        ok(&p, 1, Duration::from_millis(5));
        assert_eq!(p.pick(&|_| true), Some(2), "unmeasured first");
        ok(&p, 2, Duration::from_millis(30));
        for _ in 0..5 {
            assert_eq!(p.pick(&|_| true), Some(1));
        }
    }

    #[test]
    fn eligibility_filter_skips_and_can_exclude_all() {
        for algorithm in [
            Algorithm::Roundrobin,
            Algorithm::Random,
            Algorithm::LeastConnections,
            Algorithm::Weighted,
            Algorithm::LowestLatency,
        ] {
            let p = pool(&[1, 2, 3], algorithm);
            for _ in 0..20 {
                assert_eq!(p.pick(&|i| i == 1), Some(1), "{algorithm}");
            }
            assert_eq!(p.pick(&|_| false), None, "{algorithm}");
        }
    }

    #[test]
    fn select_skips_open_circuits_and_tried_backends() {
        let p = pool(&[1, 1, 1], Algorithm::Roundrobin);
        fail(&p, 1, 3);
        assert_eq!(p.backends()[1].health.state(), State::Open);
        for _ in 0..10 {
            let i = p.select_index(client([127, 0, 0, 1]), &|i| i == 0).unwrap();
            assert_eq!(i, 2);
        }
    }

    #[test]
    fn select_falls_back_to_open_circuits_when_nothing_is_usable() {
        let p = pool(&[1, 1], Algorithm::Roundrobin);
        fail(&p, 0, 3);
        fail(&p, 1, 3);
        assert!(p.select_index(client([127, 0, 0, 1]), &|_| false).is_some(), "panic mode");
        assert_eq!(p.select_index(client([127, 0, 0, 1]), &|i| i < 2), None);
    }

    #[test]
    fn max_latency_skips_slow_backends_but_never_all() {
        let p = pool_yaml("  max_latency: 100ms\n", &[1, 1, 1], "roundrobin");
        let ms = Duration::from_millis;
        ok(&p, 0, ms(300));
        ok(&p, 1, ms(20));
        ok(&p, 2, ms(200));
        for _ in 0..6 {
            assert_eq!(p.select_index(client([127, 0, 0, 1]), &|_| false), Some(1));
        }
        // All too slow: the fastest of the rest.
        assert_eq!(p.select_index(client([127, 0, 0, 1]), &|i| i == 1), Some(2));
    }

    #[test]
    fn sticky_clients_stay_put_until_their_backend_fails() {
        let p = pool_yaml("  sticky_session_ttl: 1m\n", &[1, 1, 1], "roundrobin");
        let first = p.select_index(client([10, 0, 0, 1]), &|_| false).unwrap();
        let other = p.select_index(client([10, 0, 0, 2]), &|_| false).unwrap();
        assert_ne!(first, other);
        for _ in 0..10 {
            assert_eq!(p.select_index(client([10, 0, 0, 1]), &|_| false), Some(first));
        }
        fail(&p, first, 3);
        let moved = p.select_index(client([10, 0, 0, 1]), &|_| false).unwrap();
        assert_ne!(moved, first);
        assert_eq!(p.select_index(client([10, 0, 0, 1]), &|_| false), Some(moved), "sticks to the new one");
    }

    #[test]
    fn sticky_table_expires_and_evicts_least_recently_used() {
        let t = StickyTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.put(7, 1, t0);
        assert_eq!(t.get(7, t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(t.get(7, t0 + Duration::from_secs(18)), Some(1), "use refreshes the entry");
        assert_eq!(t.get(7, t0 + Duration::from_secs(29)), None, "expired");
        // Fill one shard past capacity: keys k * SHARDS share shard 0.
        let key = |k: u64| k * STICKY_SHARDS as u64;
        for k in 0..STICKY_PER_SHARD as u64 {
            t.put(key(k), k as usize, t0 + Duration::from_millis(k));
        }
        t.get(key(0), t0 + Duration::from_secs(1)); // 0 is now recent
        t.put(key(1000), 5, t0 + Duration::from_secs(2));
        assert_eq!(t.get(key(1), t0 + Duration::from_secs(3)), None, "LRU evicted");
        assert_eq!(t.get(key(0), t0 + Duration::from_secs(3)), Some(0));
        assert_eq!(t.get(key(1000), t0 + Duration::from_secs(3)), Some(5));
    }

    #[test]
    fn max_active_backends_uses_the_best_n_and_replaces_failures() {
        let p = pool_yaml("  max_active_backends: 2\n", &[1, 1, 1, 1], "roundrobin");
        let picked: std::collections::BTreeSet<usize> =
            (0..20).map(|_| p.select_index(client([127, 0, 0, 1]), &|_| false).unwrap()).collect();
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), [0, 1], "config order before any data");
        fail(&p, 0, 3);
        let picked: std::collections::BTreeSet<usize> =
            (0..20).map(|_| p.select_index(client([127, 0, 0, 1]), &|_| false).unwrap()).collect();
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), [1, 2], "the next best came in");
    }

    #[test]
    fn a_reload_carries_over_unchanged_backends_only() {
        let old_config = Config::from_yaml(
            "mode: socks5\nbackends:\n  - {address: 127.0.0.1:1001}\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let old = Pool::new(&old_config);
        old.backends[0].stats.connections.add(7);
        fail(&old, 1, 3);
        // 1002 stays, 1001 goes, 1003 is new.
        let new_config = Config::from_yaml(
            "mode: socks5\nbackends:\n  - {address: 127.0.0.1:1003}\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let new = Pool::reloaded(&new_config, Some((&old, &old_config.health)));
        assert!(Arc::ptr_eq(&new.backends[1].stats, &old.backends[1].stats));
        assert_eq!(new.backends[1].health.state(), State::Open, "breaker state survives");
        assert_eq!(new.backends[0].stats.connections.get(), 0, "a new backend starts fresh");
        // Changed health settings: counters survive, health starts over.
        let retuned = Config::from_yaml(
            "mode: socks5\nhealth:\n  circuit_threshold: 9\nbackends:\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let again = Pool::reloaded(&retuned, Some((&new, &new_config.health)));
        assert!(Arc::ptr_eq(&again.backends[0].stats, &old.backends[1].stats));
        assert_eq!(again.backends[0].health.state(), State::Closed);
    }

    /// Four backends that have answered, of which the first three then
    /// go down.
    fn three_of_four_down() -> Pool {
        let p = pool(&[1, 1, 1, 1], Algorithm::Roundrobin);
        for i in 0..4 {
            ok(&p, i, Duration::from_millis(5));
        }
        for i in 0..3 {
            fail(&p, i, 3);
        }
        p
    }

    #[test]
    fn an_outage_needs_every_circuit_open_and_three_fresh_downs() {
        let p = three_of_four_down();
        assert!(!p.outage(), "one backend is still up");
        fail(&p, 3, 3);
        assert!(p.outage(), "all four went down together");
        assert!(p.backends().iter().all(|b| b.health.is_held()));
        p.report(2, Source::Traffic, &Verdict::Success(Some(Duration::from_millis(5))));
        assert!(!p.outage(), "one answered");
        assert!(p.backends().iter().all(|b| !b.health.is_held()));
    }

    #[test]
    fn refusals_are_no_outage() {
        let p = pool(&[1, 1, 1], Algorithm::Roundrobin);
        let refused = Verdict::Failed(Failure { conclusive: true, ..Failure::new("connection refused") });
        for i in 0..3 {
            p.report(i, Source::Traffic, &refused);
        }
        assert!(p.backends().iter().all(|b| b.health.state() == State::Open));
        assert!(!p.outage(), "nobody listens, but the way to them works");
    }

    #[test]
    fn backends_long_down_are_not_an_outage_and_keep_their_backoff() {
        let p = three_of_four_down();
        // Those three went down long ago (outside the window).
        for i in 0..3 {
            p.backends()[i].health.set_down_at(Instant::now() - Duration::from_secs(3600));
        }
        fail(&p, 3, 3);
        assert!(!p.outage(), "one fresh down alone is not an outage");
        assert!(p.backends().iter().all(|b| !b.health.is_held()));
    }

    fn named_pool(yaml: &str) -> Pool {
        Pool::new(&Config::from_yaml(yaml).unwrap())
    }

    fn to(name: &str) -> Address {
        Address::Domain(crate::socks5::Domain::from_slice(name.as_bytes()).unwrap(), 443)
    }

    fn proxies(n: usize) -> String {
        (0..n).map(|i| format!("  - {{name: b{i}, address: '127.0.0.1:{}'}}\n", 20_000 + i)).collect()
    }

    /// Each site's pick through `route` (no connection stays open).
    fn sites(p: &Pool, route: Route, n: usize, skip: &dyn Fn(usize) -> bool) -> Vec<usize> {
        (0..n)
            .map(|k| {
                let dest = to(&format!("www.site{k}.example"));
                p.select(route, Client { ip: [10, 0, 0, 1].into(), destination: &dest }, skip).unwrap().index
            })
            .collect()
    }

    #[test]
    fn sticky_destination_spreads_sites_and_moves_only_a_dead_backends() {
        let p = named_pool(&format!(
            "mode: socks5\nbalancer: {{algorithm: sticky_destination}}\nbackends:\n{}",
            proxies(5)
        ));
        let route = p.default_route();
        let before = sites(&p, route, 2000, &|_| false);
        let mut per = [0usize; 5];
        before.iter().for_each(|&i| per[i] += 1);
        assert!(per.iter().all(|&n| (300..500).contains(&n)), "the spread over keys: {per:?}");
        assert_eq!(before, sites(&p, route, 2000, &|_| false), "the same site, the same backend");
        // Backend 3 goes down: its sites move, no other site does.
        let down = sites(&p, route, 2000, &|i| i == 3);
        for (b, d) in before.iter().zip(&down) {
            assert!(if *b == 3 { *d != 3 } else { d == b }, "{b} -> {d}");
        }
        // Back: exactly its own sites return to it.
        assert_eq!(sites(&p, route, 2000, &|_| false), before);
        // The subdomains of a site go where the site goes.
        let www = to("www.site7.example");
        let cdn = to("cdn.site7.example");
        let pick =
            |d: &Address| p.select(route, Client { ip: [10, 0, 0, 1].into(), destination: d }, &|_| false);
        assert_eq!(pick(&www), pick(&cdn));
    }

    #[test]
    fn sticky_destination_bounds_the_load_of_one_hot_site() {
        let p = named_pool(&format!(
            "mode: socks5\nbalancer: {{algorithm: sticky_destination}}\nbackends:\n{}",
            proxies(4)
        ));
        let hot = to("video.example");
        let who = Client { ip: [10, 0, 0, 1].into(), destination: &hot };
        // Forty open connections to one site: none carries above 1.25x the
        // mean (rounded up), so the site spills over instead of piling up.
        let guards: Vec<_> = (0..40)
            .map(|_| {
                let i = p.select(p.default_route(), who, &|_| false).unwrap().index;
                crate::stats::ActiveGuard::new(&p.backends()[i].stats)
            })
            .collect();
        let active: Vec<usize> =
            p.backends().iter().map(|b| b.stats.active.load(Ordering::Relaxed)).collect();
        assert!(active.iter().all(|&n| n <= 13), "{active:?}");
        drop(guards);
    }

    #[test]
    fn p2c_prefers_the_faster_and_less_loaded() {
        let p = named_pool(&format!("mode: socks5\nbalancer: {{algorithm: p2c}}\nbackends:\n{}", proxies(2)));
        ok(&p, 0, Duration::from_millis(80));
        ok(&p, 1, Duration::from_millis(10));
        let picks = counts(&p, 100);
        assert_eq!(picks, [0, 100], "two choices of two: always the cheaper");
        // Load counts too: 10 ms × 9 open tunnels costs more than 80 ms × 1.
        let _open: Vec<_> = (0..8).map(|_| crate::stats::ActiveGuard::new(&p.backends()[1].stats)).collect();
        assert_eq!(counts(&p, 10), [10, 0]);
        // A peak shows at once.
        ok(&p, 0, Duration::from_millis(900));
        assert_eq!(counts(&p, 10), [0, 10]);
    }

    #[test]
    fn p2c_over_many_spreads_and_skips_the_slow() {
        let p = named_pool(&format!("mode: socks5\nbalancer: {{algorithm: p2c}}\nbackends:\n{}", proxies(6)));
        for i in 0..6 {
            ok(&p, i, Duration::from_millis(if i == 5 { 500 } else { 20 }));
        }
        let c = counts(&p, 3000);
        assert!(c[5] == 0, "the slow one loses every pair it is in: {c:?}");
        assert!(c[..5].iter().all(|&n| n > 300), "{c:?}");
    }

    const TIERED: &str = "mode: socks5\nbackends:\n  - {name: ssh, address: '127.0.0.1:20001'}\n  - {name: vpn, address: '127.0.0.1:20002'}\n  - {name: Tor, address: '127.0.0.1:20003'}\n  - {name: here, direct: true}\ngroups:\n  - {name: fast, backends: [ssh, vpn]}\n  - {name: tor, backends: [Tor], algorithm: sticky_destination}\n  - {name: main, tiers: [[fast], [tor], [here]]}\n";

    #[test]
    fn tiers_fall_back_in_order_and_come_back() {
        let p = named_pool(TIERED);
        let main = p.default_route();
        assert_eq!(main, Route::Group(2), "`main` is the default");
        let who = client([10, 0, 0, 1]);
        let picks = |skip: &dyn Fn(usize) -> bool| -> Vec<usize> {
            let mut v: Vec<usize> =
                (0..8).filter_map(|_| p.select(main, who, skip)).map(|x| x.index).collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(picks(&|_| false), [0, 1]);
        for i in 0..4 {
            ok(&p, i, Duration::from_millis(5));
        }
        fail(&p, 0, 3);
        assert_eq!(picks(&|_| false), [1], "ssh down: vpn alone");
        fail(&p, 1, 3);
        assert_eq!(picks(&|_| false), [2], "the first tier has none: Tor");
        assert_eq!(p.active_tier(main), Some(1));
        assert_eq!(picks(&|i| i == 2), [3], "failover crosses tiers: Tor tried, then here");
        // ssh back (a recovery probe, once its timer lets one through,
        // closes its circuit): the first tier takes over again.
        force_closed(&p, 0);
        assert_eq!(picks(&|_| false), [0]);
        assert_eq!(p.active_tier(main), Some(0));
    }

    fn force_closed(p: &Pool, i: usize) {
        let h = &p.backends()[i].health;
        let long_ago = Instant::now() + Duration::from_secs(3600);
        let _ = h.claim_probe(long_ago, long_ago, None);
        h.record(long_ago, Source::Probe, &Verdict::Success(Some(Duration::from_millis(5))), p.judging);
    }

    #[test]
    fn rules_decide_the_route() {
        let yaml = format!(
            "{TIERED}rules:\n  - {{domain_suffix: [lan], action: direct}}\n  - {{port: 25, action: block}}\n  - {{domain_suffix: [example.com], group: tor}}\n"
        );
        let c = Config::from_yaml(&yaml).unwrap();
        let p = Pool::new(&c);
        fn q(d: &Address) -> Query<'_> {
            Query { destination: Some(d), dialled: None, source: [10, 0, 0, 1].into(), inbound: Some(0) }
        }
        let mail = Address::Domain(crate::socks5::Domain::from_slice(b"mx.example.org").unwrap(), 25);
        assert_eq!(p.decide(&c, &q(&to("nas.lan"))), Decision::Route(Route::Direct));
        assert_eq!(p.decide(&c, &q(&mail)), Decision::Block(1));
        assert_eq!(p.decide(&c, &q(&to("www.example.com"))), Decision::Route(Route::Group(1)));
        assert_eq!(p.decide(&c, &q(&to("other.org"))), Decision::Route(Route::Group(2)));
        let who = client([10, 0, 0, 1]);
        assert_eq!(
            p.select(Route::Direct, who, &|_| false).map(|x| x.index),
            Some(3),
            "direct uses the direct backend"
        );
        assert_eq!(p.select(Route::Group(1), who, &|_| false).map(|x| x.index), Some(2));
    }

    #[test]
    fn rules_direct_adds_a_direct_backend_in_no_group() {
        let c = Config::from_yaml(&format!(
            "mode: socks5\nbackends:\n{}rules:\n  - {{cidr: [10.0.0.0/8], action: direct}}\n",
            proxies(2)
        ))
        .unwrap();
        let p = Pool::new(&c);
        assert_eq!(p.backends().len(), 3);
        assert!(p.backends()[2].config.hidden && p.backends()[2].config.target == Target::Direct);
        assert_eq!(counts(&p, 30).iter().sum::<usize>(), 30);
        assert_eq!(counts(&p, 30)[2], 0, "the implicit group leaves it out");
        assert_eq!(p.select(Route::Direct, client([10, 0, 0, 1]), &|_| false).map(|x| x.index), Some(2));
    }

    #[test]
    fn learned_avoids_what_failed_for_a_site_only() {
        let p =
            named_pool(&format!("mode: socks5\nbalancer: {{algorithm: learned}}\nbackends:\n{}", proxies(4)));
        let blocked = to("www.blocked.example");
        let who = Client { ip: [10, 0, 0, 1].into(), destination: &blocked };
        p.learn(0, &blocked, learned::Outcome::Failed);
        p.learn(1, &blocked, learned::Outcome::Failed);
        for _ in 0..200 {
            let i = p.select(p.default_route(), who, &|_| false).unwrap().index;
            assert!(i == 2 || i == 3, "picked {i}, which failed for this site");
        }
        // Other sites use all four.
        let spread = sites(&p, p.default_route(), 400, &|_| false);
        assert!((0..4).all(|b| spread.contains(&b)), "{spread:?}");
        // Everything failed for it: the best of them, not a refusal.
        p.learn(2, &blocked, learned::Outcome::Failed);
        p.learn(3, &blocked, learned::Outcome::Failed);
        assert!(p.select(p.default_route(), who, &|_| false).is_some());
        let view = p.learned().unwrap().view(3);
        assert_eq!(
            (view.sites, view.top[0].site.as_str(), view.top[0].avoided.len()),
            (1, "blocked.example", 4)
        );
    }

    #[test]
    fn a_group_probe_gate_takes_a_backend_out_of_that_group_only() {
        let yaml = "mode: socks5\nbackends:\n  - {name: a, address: '127.0.0.1:20001'}\n  - {name: b, address: '127.0.0.1:20002'}\ngroups:\n  - {name: streaming, backends: [a, b], test_url: 'http://127.0.0.1:9/', expected_status: [200, 204]}\n  - {name: all, backends: [a, b]}\n";
        let p = named_pool(yaml);
        let probe = p.group_probes()[0].clone();
        let (backend, gate) = p.probe_members(&probe).next().unwrap();
        assert_eq!(backend, 0);
        assert!(p.set_gate(gate, true) && !p.set_gate(gate, true), "a change is told once");
        let who = client([10, 0, 0, 1]);
        for _ in 0..6 {
            assert_eq!(p.select(Route::Group(0), who, &|_| false).map(|x| x.index), Some(1));
        }
        let other: Vec<usize> =
            (0..6).filter_map(|_| p.select(Route::Group(1), who, &|_| false)).map(|x| x.index).collect();
        assert!(other.contains(&0), "{other:?}");
    }
}
