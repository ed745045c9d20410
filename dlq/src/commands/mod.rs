//! One function per subcommand.

mod archive;
mod purge;
mod replay;
mod report;

pub(crate) use archive::{export, import};
pub(crate) use purge::purge;
pub(crate) use replay::{replay, replay_native, ReplayOptions};
pub(crate) use report::{peek, stats};
