//! Store futures driven step by step: every pending task is polled once per step with
//! a no-op waker, so a test can act on the disk (`MemDisk`'s held writes and syncs)
//! between steps. `Store` futures only wait on each other or on `MemDisk`'s held I/O,
//! both of which yield, so polling is enough. Included with
//! `#[path = "support/tasks.rs"] mod tasks;`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A boxed future borrowing the store.
pub type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Tasks named by a number (a writer's key index), and the results of those done.
pub struct Tasks<'a, T> {
    tasks: Vec<(usize, Task<'a, T>)>,
    /// `(name, result)` of every finished task, in the order they finished.
    pub results: Vec<(usize, T)>,
}

impl<T> Default for Tasks<'_, T> {
    fn default() -> Self {
        Tasks {
            tasks: Vec::new(),
            results: Vec::new(),
        }
    }
}

impl<'a, T> Tasks<'a, T> {
    pub fn spawn(&mut self, name: usize, task: Task<'a, T>) {
        self.tasks.push((name, task));
    }

    /// Polls every pending task once; returns the tasks that finished in this step.
    pub fn step(&mut self) -> &[(usize, T)] {
        let mut cx = Context::from_waker(Waker::noop());
        let from = self.results.len();
        let results = &mut self.results;
        self.tasks
            .retain_mut(|(name, task)| match task.as_mut().poll(&mut cx) {
                Poll::Ready(r) => {
                    results.push((*name, r));
                    false
                }
                Poll::Pending => true,
            });
        &self.results[from..]
    }

    pub fn pending(&self) -> usize {
        self.tasks.len()
    }

    /// The names of the tasks not finished yet.
    pub fn pending_names(&self) -> Vec<usize> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }
}
