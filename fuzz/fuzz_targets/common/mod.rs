//! What every fuzz target feeds its parser: the fuzz input as a peer that
//! sends it in one read or one byte per read, and ignores what it is sent.

use std::io::{self, Read, Write};

/// Serves `data`, in one read or one byte per read, counts what was taken
/// (`pos`), and discards what is written.
pub struct Input<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    pub one_byte: bool,
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let mut n = buf.len().min(rest.len());
        if self.one_byte {
            n = n.min(1);
        }
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
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
