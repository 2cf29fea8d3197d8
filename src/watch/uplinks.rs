//! Keeping the pool in step with the interfaces: `interfaces: auto`
//! discovery, the kernel's link states on uplinks, and following change
//! notifications (netlink on Linux, the IP Helper API on Windows).

use crate::config::Config;
use crate::context::Snapshot;

#[cfg(any(target_os = "linux", windows))]
pub use follow::follow_links;

/// `config` with the uplinks `interfaces: auto` takes from `links`.
pub fn discover(config: Config, links: &[crate::uplink::Link]) -> Config {
    if config.auto_uplinks.is_none() {
        return config;
    }
    config.with_discovered(&crate::uplink::auto_names(links))
}

/// Applies the kernel's link states to the uplinks of `snapshot`: an
/// uplink whose interface is down or gone is not picked (and proxies
/// pinned to it are not blamed); one that comes back is probed at once.
/// Every uplink is re-probed after any change (`reprobe`).
pub fn mark_links(snapshot: &Snapshot, links: &[crate::uplink::Link], reprobe: bool) {
    let now = std::time::Instant::now();
    let mut changed = false;
    for b in snapshot.pool.backends() {
        let crate::config::Target::Uplink(uplink) = &b.config.target else { continue };
        // No list (not Linux, or listing failed): the state is unknown,
        // and probes and traffic judge the uplink alone.
        if let (Some(dev), false) = (&uplink.interface, links.is_empty()) {
            let link = links.iter().find(|l| l.name == *dev);
            let down = !link.is_some_and(|l| l.up);
            if b.health.set_link_down(down, now) {
                changed = true;
                if down {
                    let why = if link.is_some() { "no carrier or administratively down" } else { "gone" };
                    log::warn!(
                        "uplink {}: interface {dev} is down ({why}); not used until it is back",
                        b.config.name
                    );
                } else {
                    log::info!("uplink {}: interface {dev} is up; probing it", b.config.name);
                }
            }
        }
        if reprobe {
            b.health.retry_now(now);
            changed = true;
        }
    }
    if changed {
        snapshot.pool.recompute_active_set();
        snapshot.pool.kick();
    }
}

#[cfg(any(target_os = "linux", windows))]
mod follow {
    use std::sync::Arc;
    use std::time::Duration;

    use smol::channel::Sender;
    use smol::future::FutureExt;
    use smol::Timer;

    use super::mark_links;
    use crate::context::Current;
    use crate::stats::DaemonStats;

    /// A burst of netlink messages (one `ip link set` sends several) is taken
    /// as one change once this long has passed without another.
    const LINK_SETTLE: Duration = Duration::from_millis(100);

    /// Follows interface changes (netlink on Linux, the IP Helper's
    /// interface and route notifications on Windows): marks uplinks up or
    /// down, re-probes them, and asks the server to rebuild the pool when the
    /// set `interfaces: auto` would take has changed.
    pub async fn follow_links(current: Arc<Current>, stats: Arc<DaemonStats>, rediscover: Sender<()>) {
        #[cfg(target_os = "linux")]
        use crate::uplink::links::Watcher;
        #[cfg(windows)]
        use crate::uplink::win::Watcher;
        let watcher = match Watcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch network interfaces ({e}); uplinks are judged by probes and traffic only"
                );
                None
            }
        };
        let mut first = true;
        loop {
            let links = crate::uplink::current_links();
            // Published first: a rebuild asked for below marks its new pool
            // from this list.
            *stats.links.lock().unwrap_or_else(|e| e.into_inner()) = links.clone();
            let snapshot = current.get();
            mark_links(&snapshot, &links, !first);
            if snapshot.config.auto_uplinks.is_some() {
                let wanted = crate::uplink::auto_names(&links);
                let have: Vec<&str> = snapshot.config.discovered();
                if wanted.iter().map(String::as_str).ne(have.iter().copied()) {
                    log::info!(
                        "interfaces: auto: uplinks now [{}] (were [{}])",
                        wanted.join(", "),
                        have.join(", ")
                    );
                    let _ = rediscover.try_send(());
                }
            }
            first = false;
            let Some(watcher) = &watcher else { return };
            if let Err(e) = watcher.changed().await {
                log::warn!("stopped watching network interfaces: {e}");
                return;
            }
            // Let the burst finish.
            loop {
                let more = async { watcher.changed().await.is_ok() };
                let quiet = async {
                    Timer::after(LINK_SETTLE).await;
                    false
                };
                if !more.or(quiet).await {
                    break;
                }
            }
        }
    }
}
