//! The per-thread capability drop (privileges.rs, issue 13) on its own, in this test process
//! (a binary of its own: it gives up this process's capabilities). As root, so that every thread
//! starts with the full set and the drop has something to do; CI set and not root fails.
//!
//! One test, in steps, since the steps share the process: a thread that blocks the signal makes
//! the drop fail with its name (fail closed, not hang); then, with threads that keep spawning
//! threads and a thread blocked in recv while it runs, every thread ends with no capability, none
//! ambient or inheritable, the bounding set empty and no_new_privs; threads spawned afterwards
//! inherit that; the blocked recv still gets its datagram (the signal's SA_RESTART).

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_root, require};
use stratumd::privileges::{self, ThreadPrivileges};

fn every_thread() -> Vec<ThreadPrivileges> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        out.push(ThreadPrivileges::parse(name.trim(), &status).unwrap());
    }
    out
}

fn nothing_left(p: &ThreadPrivileges) -> bool {
    (p.inheritable, p.permitted, p.effective, p.ambient, p.bounding) == (0, 0, 0, 0, 0) && p.no_new_privs
}

#[test]
fn every_thread_gives_up_its_capabilities_even_while_threads_are_spawned() {
    if !require(is_root(), "the per-thread drop is only seen with capabilities to drop (root)") {
        return;
    }
    assert_ne!(privileges::this_thread().unwrap().permitted, 0, "root starts with capabilities");

    // 1. A thread that blocks every signal is never done: an error naming it, within the timeout.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let deaf = std::thread::Builder::new()
        .name("deaf".into())
        .spawn(move || {
            // SAFETY: a full signal mask for this thread only.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            ready_tx.send(()).unwrap();
            let _ = released.recv();
        })
        .unwrap();
    ready.recv().unwrap();
    let started = Instant::now();
    let err = privileges::limit_every_thread(0).expect_err("a thread that never answers is an error");
    assert!(err.to_string().contains("deaf"), "{err}");
    assert!(started.elapsed() < privileges::BROADCAST_TIMEOUT + Duration::from_secs(2), "{:?}", started.elapsed());
    release.send(()).unwrap();
    deaf.join().unwrap();

    // 2. Spawners: each keeps starting short threads that report their own sets afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let spawners: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("spawner{i}"))
                .spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let child = std::thread::Builder::new()
                            .name("child".into())
                            .spawn(|| {
                                std::thread::sleep(Duration::from_millis(2));
                                privileges::this_thread().unwrap()
                            })
                            .unwrap();
                        seen.push(child.join().unwrap());
                    }
                    seen
                })
                .unwrap()
        })
        .collect();
    // A thread blocked in recv (no timeout) through the drop.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = socket.local_addr().unwrap();
    let receiver = std::thread::Builder::new()
        .name("receiver".into())
        .spawn(move || {
            let mut buf = [0u8; 16];
            let got = socket.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
            (got, privileges::this_thread().unwrap())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));

    privileges::limit_every_thread(0).unwrap();
    privileges::restrict_every_thread(0).unwrap();
    let threads = every_thread();
    assert!(threads.iter().all(nothing_left), "{threads:#?}");
    // At least: a child just spawned has its spawner's name until it sets its own.
    assert!(threads.iter().filter(|t| t.name.starts_with("spawner")).count() >= 4, "{threads:#?}");

    // Threads spawned from here on, by any of them, hold nothing either.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let after = Instant::now();
    let mut children = 0;
    for s in spawners {
        let seen = s.join().unwrap();
        children += seen.len();
        // The last ones were spawned after the drop.
        let last = seen.last().expect("each spawner started threads");
        assert!(nothing_left(last), "{last:#?}");
    }
    assert!(children > 8, "{children} threads spawned around the drop");
    assert!(after.elapsed() < Duration::from_secs(2));
    let late = std::thread::spawn(|| privileges::this_thread().unwrap()).join().unwrap();
    assert!(nothing_left(&late), "{late:#?}");

    // The blocked recv: restarted after the handler, it gets its datagram.
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"after", to).unwrap();
    let (got, held) = receiver.join().unwrap();
    assert_eq!(got.expect("recv through the drop"), b"after");
    assert!(nothing_left(&held), "{held:#?}");
}
