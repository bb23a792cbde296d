//! One file per subcommand; each parses nothing and prints everything, and asks the engine for
//! the rest.

pub mod cp;
pub mod doctor;
pub mod exec;
pub mod fs;
pub mod gc;
pub mod image;
pub mod login;
pub mod logs;
pub mod ls;
pub mod pull;
pub mod rm;
pub mod run;
pub mod serve;
pub mod setup;
pub mod snapshot;
pub mod stop;
pub mod supervise;
pub mod template;
pub mod volume;
