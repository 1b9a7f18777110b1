//! Background disk work, in one style: each kind of job (flushing the database log, making an
//! upload durable, writing an upload back early, removing spool files) has one long-lived
//! thread, named for what it does, that takes its jobs from a channel in order. Nothing
//! starts a thread per job, and the event loop never waits for one.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use mio::Waker;

/// A thread that runs the jobs sent to it.
pub struct Worker<J> {
    jobs: Sender<J>,
    thread: JoinHandle<()>,
}

/// Where jobs for a worker are sent; clones may outlive a borrow of the worker (an upload
/// removes its own file when dropped).
pub type Jobs<J> = Sender<J>;

impl<J: Send + 'static> Worker<J> {
    /// Starts the thread `name`, which runs `body` over the jobs; `body` returns once every
    /// sender of jobs is gone.
    pub fn start(
        name: &str,
        body: impl FnOnce(Receiver<J>) + Send + 'static,
    ) -> io::Result<Worker<J>> {
        let (jobs, queue) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || body(queue))?;
        Ok(Worker { jobs, thread })
    }

    /// Queues a job; gives it back if the thread has ended.
    pub fn send(&self, job: J) -> Result<(), J> {
        self.jobs.send(job).map_err(|mpsc::SendError(job)| job)
    }

    /// A sender of jobs for those that outlive the worker's owner.
    pub fn jobs(&self) -> Jobs<J> {
        self.jobs.clone()
    }

    /// Waits until the jobs queued so far have run. Only for a worker whose job senders are
    /// all its own: a clone held elsewhere would keep the thread waiting for more.
    pub fn finish(self) {
        let Worker { jobs, thread } = self;
        drop(jobs);
        if thread.join().is_err() {
            log::error!("a background worker panicked");
        }
    }
}

/// Where a worker hands its results to the event loop, waking it for each.
pub struct ToLoop<R> {
    results: Sender<R>,
    waker: Arc<Waker>,
}

impl<R> ToLoop<R> {
    /// The worker's end, and the loop's, which takes the results without waiting.
    pub fn channel(waker: Arc<Waker>) -> (ToLoop<R>, Receiver<R>) {
        let (results, taken) = mpsc::channel();
        (ToLoop { results, waker }, taken)
    }

    /// Hands `result` to the loop and wakes it. False once the loop is gone: the worker may
    /// stop.
    pub fn send(&self, result: R) -> bool {
        if self.results.send(result).is_err() {
            return false;
        }
        if let Err(error) = self.waker.wake() {
            log::error!("cannot wake the event loop: {error}");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_on_the_named_thread_and_finish_waits_for_them() {
        let (done, results) = mpsc::channel();
        let worker = Worker::start("test-worker", move |jobs: Receiver<u32>| {
            for job in jobs {
                let name = thread::current().name().map(str::to_owned);
                done.send((job, name)).expect("results");
            }
        })
        .expect("start");
        for job in 1..=3 {
            worker.send(job).expect("queued");
        }
        worker.finish();
        let ran: Vec<_> = results.try_iter().collect();
        let name = Some("test-worker".to_owned());
        assert_eq!(ran, vec![(1, name.clone()), (2, name.clone()), (3, name)]);
    }
}
