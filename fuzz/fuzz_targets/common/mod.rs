//! What every fuzz target feeds its parser, and tests/parsers too: the
//! input as a peer that sends it in reads of at most a given size (one byte
//! per read, or all of it in one), and ignores what it is sent.

use std::io::{self, Read, Write};

/// Serves `data` in reads of at most `chunk` bytes, counts what was taken
/// (`pos`), and discards what is written.
pub struct Input<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    pub chunk: usize,
}

impl<'a> Input<'a> {
    /// `data` from its start, in reads of at most `chunk` bytes (`usize::MAX`: all in one).
    pub fn new(data: &'a [u8], chunk: usize) -> Input<'a> {
        Input { data, pos: 0, chunk }
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = buf.len().min(self.chunk).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A peek shows what the next read would return, without taking it.
impl blocking_proxy::proto::http::Peek for Input<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = buf.len().min(self.chunk).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

impl Write for Input<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
