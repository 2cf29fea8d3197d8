//! UDP in gateway mode (Linux, `protocol: tproxy`): the datagrams that
//! nftables `tproxy` hands a tproxy listener's UDP socket, relayed through
//! the balanced backends as a UDP association would be.
//!
//! Each (LAN device, destination) pair is a flow with an upstream of its
//! own, opened with [`super::udp::open`] (a SOCKS5 backend's UDP
//! ASSOCIATE, or our own socket for `direct` and uplinks), and a reply
//! socket bound, transparently, to the destination: the device gets its
//! answers from the address it sent to. A flow ends after
//! `limits.udp_idle_timeout` without a datagram, or when its backend goes
//! and no other takes it; it counts against `limits.max_udp_associations`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Executor, Timer};

use super::udp::{open, Event, Leg, Upstream, MAX_DATAGRAM};
use crate::connect::Attempts;
use crate::context::{Current, Snapshot};
use crate::socks5::{self, Address};
use crate::stats::{DaemonStats, UdpDrop};

/// Datagrams queued for a flow whose upstream is busy; more are dropped.
const QUEUE: usize = 64;

/// A flow the listener knows: where its datagrams go.
struct Flow {
    from: SocketAddr,
    to: SocketAddr,
    tx: Sender<Vec<u8>>,
}

/// Serves a tproxy listener's UDP socket until cancelled.
pub async fn serve(
    ex: Arc<Executor<'static>>,
    socket: UdpSocket,
    current: Arc<Current>,
    stats: Arc<DaemonStats>,
) {
    let Ok(socket) = Async::new(socket) else { return };
    let mut flows: Vec<Flow> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        while let Ok((n, from, to)) = crate::tproxy::recv(socket.get_ref(), &mut buf) {
            let snap = current.get();
            if !snap.config.allows_client(from.ip()) {
                continue;
            }
            if snap.config.denied(to).is_some() {
                stats.udp_drop(UdpDrop::Refused);
                continue;
            }
            let datagram = buf[..n].to_vec();
            if let Some(flow) = flows.iter().find(|f| f.from == from && f.to == to && !f.tx.is_closed()) {
                if flow.tx.try_send(datagram).is_err() {
                    stats.udp_drop(UdpDrop::Oversized);
                }
                continue;
            }
            flows.retain(|f| !f.tx.is_closed());
            let limit = snap.config.limits.max_udp_associations.get() as usize;
            if stats.udp_associations.fetch_add(1, Ordering::Relaxed) >= limit {
                stats.udp_associations.fetch_sub(1, Ordering::Relaxed);
                stats.udp_drop(UdpDrop::Refused);
                continue;
            }
            let (tx, rx) = channel::bounded(QUEUE);
            let _ = tx.try_send(datagram);
            flows.push(Flow { from, to, tx });
            let stats = Arc::clone(&stats);
            ex.spawn(async move {
                Box::pin(flow(&snap, &stats, from, to, rx)).await;
                stats.udp_associations.fetch_sub(1, Ordering::Relaxed);
            })
            .detach();
        }
    }
}

/// One flow, from its first datagram to its end.
async fn flow(snap: &Snapshot, stats: &DaemonStats, from: SocketAddr, to: SocketAddr, rx: Receiver<Vec<u8>>) {
    // Answers go back from the destination's own address.
    let reply = match crate::tproxy::udp_socket(to, false).and_then(Async::new) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("gateway UDP {from} -> {to}: no reply socket: {e}");
            return;
        }
    };
    let mut attempts = Box::new(Attempts::new(snap, Instant::now() + snap.config.limits.handshake_timeout));
    let mut up = match Box::pin(open(snap, from.ip(), &mut attempts)).await {
        Ok(up) => up,
        Err(e) => {
            log::debug!("gateway UDP {from} -> {to}: no backend: {e}");
            return;
        }
    };
    drop(attempts);
    let header = socks5::udp_header(&Address::Ip(to));
    let idle = snap.config.limits.udp_idle_timeout;
    let mut last = Instant::now();
    loop {
        let event = {
            let queued = async { rx.recv().await.ok() };
            let upstream = async { Err(up.readable().await) };
            let timer = async {
                Timer::at(last + idle).await;
                Err(Event::Idle)
            };
            async { Ok(queued.await) }.or(upstream).or(timer).await
        };
        match event {
            Ok(Some(data)) => {
                last = Instant::now();
                match &up.leg {
                    Leg::Proxy { socket, .. } => {
                        let mut d = header.to_vec();
                        d.extend_from_slice(&data);
                        if socket.get_ref().send(&d).is_ok() {
                            up.count_up(snap, data.len());
                        }
                    }
                    Leg::Native { .. } => up.send_native(snap, stats, &data, to),
                }
            }
            Ok(None) | Err(Event::Idle) | Err(Event::ClientClosed) => return,
            Err(Event::BackendClosed) => {
                let mut again =
                    Box::new(Attempts::new(snap, Instant::now() + snap.config.limits.handshake_timeout));
                match Box::pin(open(snap, from.ip(), &mut again)).await {
                    Ok(next) => up = next,
                    Err(_) => return,
                }
            }
            Err(Event::Upstream | Event::Client) => {
                last = Instant::now();
                deliver(snap, stats, &up, &reply, from);
            }
        }
    }
}

/// Hands the datagrams waiting upstream to the device at `device`, from
/// the reply socket.
fn deliver(
    snap: &Snapshot,
    stats: &DaemonStats,
    up: &Upstream,
    reply: &Async<UdpSocket>,
    device: SocketAddr,
) {
    let backend = &snap.pool.backends()[up.backend].stats;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let send = |data: &[u8]| {
        if reply.get_ref().send_to(data, device).is_ok() {
            backend.udp_datagrams_down.add(1);
            backend.udp_bytes_down.add(data.len() as u64);
        }
    };
    match &up.leg {
        Leg::Proxy { socket, .. } => {
            while let Ok(n) = socket.get_ref().recv(&mut buf) {
                match socks5::parse_udp_header(&buf[..n]) {
                    Ok((_, at)) => send(&buf[at..n]),
                    Err(_) => up.dropped(snap, stats, UdpDrop::Malformed),
                }
            }
        }
        Leg::Native { v4, v6 } => {
            for s in [v4, v6].into_iter().flatten() {
                while let Ok((n, _)) = s.get_ref().recv_from(&mut buf) {
                    send(&buf[..n]);
                }
            }
        }
    }
}
