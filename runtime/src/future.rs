//! The one boxed future of object code: not `Send` (an instance runs on one thread), borrowing for `'a`.
//! Handlers and events are `'static`; a critical section of storage borrows what it runs on.

use std::future::Future;
use std::pin::Pin;

/// A boxed future of object code. Not `Send`: an instance runs on one thread.
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
