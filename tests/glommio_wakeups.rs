//! The vendored glommio's sleep protocol (vendor/README.md): an executor about
//! to sleep stores `should_notify`, issues a `SeqCst` fence and looks at its
//! queues once more; a remote sender pushes, issues a `SeqCst` fence and then
//! reads `should_notify`. A wake-up lost between the two would leave a message
//! in a queue with its receiver asleep for good. Two executors play ping-pong
//! over shared channels (how shards forward to each other, `runtime/forward.rs`),
//! each idle between messages so that it goes to sleep, with pauses of several
//! lengths on the sending side; a lost wake-up shows as a stalled round trip.

use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::LocalExecutorBuilder;

const ROUNDS: u32 = 20_000;

/// This thread's voluntary context switches so far: each is a sleep.
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn executors_that_sleep_between_messages_always_wake_for_the_next() {
    let (to_echo, echo_in) = shared_channel::new_bounded::<u32>(1);
    let (to_main, main_in) = shared_channel::new_bounded::<u32>(1);
    let (done_tx, done_rx) = mpsc::channel();

    let echo = LocalExecutorBuilder::default()
        .name("echo")
        .spawn(move || async move {
            let receiver = echo_in.connect().await;
            let sender = to_main.connect().await;
            let before = voluntary_switches();
            while let Some(n) = receiver.recv().await {
                sender.send(n).await.expect("main is listening");
            }
            voluntary_switches() - before
        })
        .expect("echo executor");

    let main = LocalExecutorBuilder::default()
        .name("ping")
        .spawn(move || async move {
            let sender = to_echo.connect().await;
            let receiver = main_in.connect().await;
            for n in 0..ROUNDS {
                // Mostly back to back (the receiver may still be awake), now
                // and then after a pause long enough for it to sleep.
                match n % 100 {
                    0 => glommio::timer::sleep(Duration::from_micros(200)).await,
                    1..=9 => glommio::timer::sleep(Duration::from_micros(5)).await,
                    _ => {}
                }
                sender.send(n).await.expect("echo is listening");
                let back = receiver.recv().await.expect("echo answers");
                assert_eq!(back, n);
                let _ = done_tx.send(n);
            }
        })
        .expect("ping executor");

    // Every round trip must finish; one that stalls for seconds lost its
    // wake-up (the whole run takes well under a second on the dev VM).
    for n in 0..ROUNDS {
        match done_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(got) => assert_eq!(got, n),
            Err(e) => panic!("round trip {n} did not finish: {e} (a lost wake-up)"),
        }
    }
    main.join().expect("ping executor ends");
    let slept = echo.join().expect("echo executor ends");
    // The echo executor has nothing else to do: it went to sleep waiting
    // for most messages, so the protocol was exercised, not skipped.
    assert!(
        slept >= u64::from(ROUNDS / 4),
        "the echo executor slept {slept} times in {ROUNDS} round trips"
    );
}
