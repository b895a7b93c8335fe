//! Where a component's idle instances wait between calls: each thread keeps the one it used
//! last (of one component, without the pool's lock), the rest wait in the component's pool. A
//! thread's instance of a dropped component is freed when the thread next releases another's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::sync::Arc;

use ricochet::component::{PolicyComponent, Sandbox};
use ricochet::coordination::{Coordinator, InMemoryCoordinator};
use ricochet::engine::HostBackends;
use support::guest;

fn load() -> PolicyComponent {
    let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

#[test]
fn a_thread_keeps_one_instance_and_frees_it_when_its_component_is_gone() {
    // A thread of its own, so no other test's component is this thread's.
    std::thread::spawn(|| {
        let coordinator: Arc<dyn Coordinator> = Arc::new(InMemoryCoordinator::new());
        let a = load().with_backends(HostBackends {
            coordinator: coordinator.clone(),
            ..HostBackends::default()
        });
        for _ in 0..3 {
            assert!(a.call_empty().unwrap());
        }
        assert_eq!(a.instances_created(), 1, "a thread reuses its instance");

        // Another component on the same thread, alternating: the thread keeps a's instance,
        // b's waits in b's pool; neither makes a second one.
        let b = load();
        for _ in 0..3 {
            assert!(b.call_empty().unwrap());
            assert!(a.call_empty().unwrap());
        }
        assert_eq!((a.instances_created(), b.instances_created()), (1, 1));

        // a's backends are held by a and by its idle instance (its store's state).
        assert_eq!(Arc::strong_count(&coordinator), 2);
        drop(a);
        assert_eq!(
            Arc::strong_count(&coordinator),
            2,
            "the thread still keeps the dropped component's instance"
        );
        assert!(b.call_empty().unwrap());
        assert_eq!(
            Arc::strong_count(&coordinator),
            1,
            "releasing b's instance frees the dropped component's, and the thread keeps b's"
        );
        assert!(b.call_empty().unwrap());
        assert_eq!(b.instances_created(), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn clear_idle_drops_this_threads_instance_too() {
    std::thread::spawn(|| {
        let a = load();
        assert!(a.call_empty().unwrap());
        a.clear_idle();
        assert!(a.call_empty().unwrap());
        assert_eq!(a.instances_created(), 2);
    })
    .join()
    .unwrap();
}

#[test]
fn threads_calling_at_once_each_get_an_instance_and_the_pool_serves_the_rest() {
    let a = Arc::new(load());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert!(a.call_empty().unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One per thread at most (each thread keeps its own; overlapping first calls may make one
    // each), never one per call.
    let made = a.instances_created();
    assert!((1..=4).contains(&made), "{made} instances for 4 threads");
}

#[test]
fn a_thread_that_exits_gives_its_instance_back_to_the_pool() {
    // A thread per call (a thread-per-request server, `spawn_blocking` threads that time out):
    // each exiting thread's instance goes back to the component's pool, so the next thread
    // finds it instead of instantiating again.
    let a = Arc::new(load());
    for _ in 0..5 {
        let a = a.clone();
        std::thread::spawn(move || assert!(a.call_empty().unwrap()))
            .join()
            .unwrap();
    }
    assert_eq!(
        a.instances_created(),
        1,
        "one instance, handed from thread to thread"
    );
}
