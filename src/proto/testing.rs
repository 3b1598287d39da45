//! Test input that arrives the worst way TCP can split it: one byte per read.

use std::io::{self, Read, Write};

use super::http::Peek;

/// A reader that hands out one byte per call.
pub(crate) struct OneByte<R>(pub R);

impl<R: Read> Read for OneByte<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

/// A peek shows one byte too, as if only one had arrived.
impl Peek for OneByte<&[u8]> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.peek(&mut buf[..n])
    }
}

/// A peer for a handshake parser: its input served one byte at a
/// time, what the parser writes collected.
pub(crate) struct Duplex<'a> {
    pub input: OneByte<&'a [u8]>,
    pub output: Vec<u8>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Peek for Duplex<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.peek(buf)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A source that counts the reads and peeks it is asked for: how many
/// system calls a parser would make on a socket.
pub(crate) struct Counted<'a> {
    pub input: &'a [u8],
    pub calls: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        self.input.read(buf)
    }
}

impl Peek for Counted<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        self.input.peek(buf)
    }
}
