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

use super::udp::{open_anew, take_buffer, Event, MAX_DATAGRAM};
use crate::context::{Current, Snapshot};
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
            if !crate::stats::take_slot(&stats.udp_associations, limit) {
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
    let mut up = match open_anew(snap, from.ip()).await {
        Ok(up) => up,
        Err(e) => {
            log::debug!("gateway UDP {from} -> {to}: no backend: {e}");
            return;
        }
    };
    let mut buf = Vec::new();
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
                up.send_to(snap, stats, &data, to);
            }
            Ok(None) | Err(Event::Idle) | Err(Event::ClientClosed) => return,
            Err(Event::BackendClosed) => match up.replacement(snap, from.ip()).await {
                Ok(next) => up = next,
                Err(_) => return,
            },
            Err(Event::Upstream | Event::Client) => {
                last = Instant::now();
                // To the device, from the reply socket, without the header.
                up.receive(snap, stats, take_buffer(&mut buf), |datagram, at| {
                    reply.get_ref().send_to(&datagram[at..], from).is_ok()
                });
                buf = Vec::new();
            }
        }
    }
}
