//! How a run of either binary ends: exit 0, 1 with one line for a failure,
//! 2 with one line for bad usage.

use std::fmt;

use crate::error::Error;

/// Why a binary stops.
#[derive(Debug)]
pub enum Exit {
    /// `--help` or `--version` was printed.
    Done,
    /// Bad command line: one line, exit status 2.
    Usage(String),
    /// A failure at start or while running: one line, exit status 1.
    Failed(Error),
}

impl fmt::Display for Exit {
    /// The one line a failure or a usage error says (nothing for `Done`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Done => Ok(()),
            Exit::Usage(msg) => f.write_str(msg),
            Exit::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for Exit {
    fn from(e: Error) -> Self {
        Exit::Failed(e)
    }
}

impl From<getopts::Fail> for Exit {
    /// getopts' failures, said as the binaries say their own.
    fn from(e: getopts::Fail) -> Self {
        use getopts::Fail;
        let flag = |o: &str| if o.chars().count() == 1 { format!("-{o}") } else { format!("--{o}") };
        Exit::Usage(match e {
            Fail::UnrecognizedOption(o) => format!("unknown option {}", flag(o.trim_start_matches('-'))),
            Fail::ArgumentMissing(o) => format!("{} needs a value", flag(&o)),
            Fail::OptionMissing(o) => format!("{} is required", flag(&o)),
            Fail::OptionDuplicated(o) => format!("{} is given more than once", flag(&o)),
            Fail::UnexpectedArgument(o) => format!("{} takes no value", flag(&o)),
        })
    }
}

/// A usage error that says `msg`.
pub fn usage(msg: impl Into<String>) -> Exit {
    Exit::Usage(msg.into())
}

/// A failure at start: a file or an address that cannot serve, named in `msg`.
pub fn failed(msg: impl Into<String>) -> Exit {
    Exit::Failed(Error::Config(msg.into()))
}
