//! The least a TCP proxy can do, as a yardstick for `scripts/bench.sh` and
//! `scripts/rate_profile.py`: how many connections per second, and how short
//! a round trip, could any proxy in front of their backends reach here?
//!
//! ```text
//! floorproxy LISTEN THREADS BACKEND...
//! ```
//!
//! Forwards every connection to the next BACKEND (round robin), byte for
//! byte, like HAProxy's `mode tcp`. It does only the work that any proxy
//! must: accept, connect, read, write, shutdown, close. Each thread has
//! its own listener (`SO_REUSEPORT`) and its own edge-triggered epoll, so
//! there is no hand-over between threads, no re-arming (two `epoll_ctl`
//! per connection), no timer, no log, no balancing state, no error
//! handling beyond closing both sides, and a plain copy through a 16 KiB
//! buffer per direction (HAProxy's default buffer size), which also makes
//! it no yardstick for bulk throughput. It is not a product: no limits, no
//! timeouts. Linux only.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("floorproxy: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    floor::main()
}

#[cfg(target_os = "linux")]
mod floor {
    use std::io;
    use std::mem;
    use std::net::{SocketAddr, SocketAddrV4};
    use std::os::fd::RawFd;
    use std::thread;

    /// HAProxy's default `tune.bufsize`.
    const BUF: usize = 16 * 1024;
    const EVENTS: usize = 256;

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.len() < 3 {
            eprintln!("usage: floorproxy LISTEN THREADS BACKEND...");
            std::process::exit(2);
        }
        let listen = parse(&args[0]);
        let threads: usize = args[1].parse().unwrap_or_else(|_| usage("THREADS is a number"));
        let backends: Vec<SocketAddrV4> = args[2..].iter().map(|a| parse(a)).collect();
        let workers: Vec<_> = (0..threads.max(1))
            .map(|i| {
                let backends = backends.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(listen, &backends, i) {
                        eprintln!("floorproxy: {e}");
                        std::process::exit(1);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
    }

    fn usage(msg: &str) -> ! {
        eprintln!("floorproxy: {msg}");
        std::process::exit(2)
    }

    fn parse(s: &str) -> SocketAddrV4 {
        match s.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(a)) => a,
            _ => usage(&format!("{s}: not an IPv4 address:port")),
        }
    }

    fn check(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        // SAFETY: sockaddr_in is plain data; all zeroes is valid.
        let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = a.port().to_be();
        sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
        sa
    }

    /// One direction of a connection: bytes read from one side and not
    /// yet written to the other, and whether the reading side ended.
    #[derive(Default)]
    struct Half {
        buf: Vec<u8>,
        start: usize,
        end: usize,
        eof: bool,
        shut: bool,
    }

    struct Pair {
        fds: [RawFd; 2],
        halves: [Half; 2],
    }

    fn serve(listen: SocketAddrV4, backends: &[SocketAddrV4], first: usize) -> io::Result<()> {
        // SAFETY: plain system calls on descriptors this function owns.
        unsafe {
            let lfd = check(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0))?;
            let one: libc::c_int = 1;
            let len = mem::size_of_val(&one) as libc::socklen_t;
            let one_ptr = &one as *const _ as *const libc::c_void;
            check(libc::setsockopt(lfd, libc::SOL_SOCKET, libc::SO_REUSEADDR, one_ptr, len))?;
            check(libc::setsockopt(lfd, libc::SOL_SOCKET, libc::SO_REUSEPORT, one_ptr, len))?;
            let sa = sockaddr(listen);
            check(libc::bind(lfd, &sa as *const _ as *const libc::sockaddr, mem::size_of_val(&sa) as _))?;
            check(libc::listen(lfd, 1024))?;
            let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: u64::MAX };
            check(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, &mut ev))?;

            let mut pairs: Vec<Option<Pair>> = Vec::new();
            let mut free: Vec<usize> = Vec::new();
            let mut next = first;
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
            loop {
                let n = libc::epoll_wait(ep, events.as_mut_ptr(), EVENTS as _, -1);
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                for ev in &events[..n as usize] {
                    if ev.u64 == u64::MAX {
                        loop {
                            let cfd = libc::accept4(
                                lfd,
                                std::ptr::null_mut(),
                                std::ptr::null_mut(),
                                libc::SOCK_NONBLOCK,
                            );
                            if cfd < 0 {
                                break;
                            }
                            let backend = backends[next % backends.len()];
                            next = next.wrapping_add(1);
                            let bfd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                            if bfd < 0 {
                                libc::close(cfd);
                                continue;
                            }
                            let sa = sockaddr(backend);
                            let r = libc::connect(
                                bfd,
                                &sa as *const _ as *const libc::sockaddr,
                                mem::size_of_val(&sa) as _,
                            );
                            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
                                libc::close(cfd);
                                libc::close(bfd);
                                continue;
                            }
                            let slot = free.pop().unwrap_or_else(|| {
                                pairs.push(None);
                                pairs.len() - 1
                            });
                            pairs[slot] = Some(Pair { fds: [cfd, bfd], halves: Default::default() });
                            for (side, fd) in [cfd, bfd].into_iter().enumerate() {
                                let mut ev = libc::epoll_event {
                                    events: (libc::EPOLLIN
                                        | libc::EPOLLOUT
                                        | libc::EPOLLRDHUP
                                        | libc::EPOLLET) as u32,
                                    u64: (slot as u64) << 1 | side as u64,
                                };
                                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
                            }
                        }
                        continue;
                    }
                    let slot = (ev.u64 >> 1) as usize;
                    let done = match pairs.get_mut(slot).and_then(Option::as_mut) {
                        Some(pair) => ev.events & libc::EPOLLERR as u32 != 0 || pump(pair),
                        None => false,
                    };
                    if done {
                        let pair = pairs[slot].take().expect("slot in use");
                        libc::close(pair.fds[0]);
                        libc::close(pair.fds[1]);
                        free.push(slot);
                    }
                }
            }
        }
    }

    /// Moves what can be moved in both directions; true when the pair is
    /// finished (both directions ended and flushed, or an error).
    unsafe fn pump(pair: &mut Pair) -> bool {
        for dir in 0..2 {
            let (src, dst) = (pair.fds[dir], pair.fds[1 - dir]);
            let h = &mut pair.halves[dir];
            loop {
                if h.start < h.end {
                    let w = libc::send(
                        dst,
                        h.buf[h.start..].as_ptr().cast(),
                        h.end - h.start,
                        libc::MSG_NOSIGNAL,
                    );
                    if w < 0 {
                        if io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                            break;
                        }
                        return true;
                    }
                    h.start += w as usize;
                    continue;
                }
                if h.eof {
                    if !h.shut {
                        libc::shutdown(dst, libc::SHUT_WR);
                        h.shut = true;
                    }
                    break;
                }
                if h.buf.is_empty() {
                    h.buf = vec![0; BUF];
                }
                let r = libc::recv(src, h.buf.as_mut_ptr().cast(), BUF, 0);
                if r < 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                        break;
                    }
                    return true;
                }
                if r == 0 {
                    h.eof = true;
                } else {
                    h.start = 0;
                    h.end = r as usize;
                }
            }
        }
        pair.halves.iter().all(|h| h.shut)
    }
}
