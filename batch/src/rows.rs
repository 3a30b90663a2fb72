//! What the native engine holds of each valid row ([`Row`]: keys, times,
//! numbers, never strings) and the block lists rows are kept in, shared by
//! the counting phases (`count`) and the spill files (`spill`).

use schemas::dedup::CopyOrder;

/// Rows per decoded batch (a row's index in it must fit a `u16`).
pub(crate) const BATCH_ROWS: usize = 8192;

/// What counting needs of one valid row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) id: [u64; 2],
    pub(crate) fp: u64,
    pub(crate) received_at: i64,
    pub(crate) offset: i64,
    pub(crate) occurred_at: i64,
    pub(crate) partition: i32,
    pub(crate) watch_seconds: i32,
    /// Video number: in the reader's dictionary until dedup, global after.
    pub(crate) video: u32,
    /// The user id's [`schemas::fraud::value_hash`]: the sketch's hash, and how users are
    /// grouped (equal ids are compared where it matters).
    pub(crate) user_hash: u64,
    /// The behavioural [`schemas::fraud::fingerprint`] (bot-farm rule, the
    /// metronome) of a billable row; 0 for the others, or with both off.
    pub(crate) print: u64,
    /// The verified playback id's [`schemas::fraud::value_hash`] (replay
    /// rule) of a billable row, if `verified`; 0 for the others, or with the
    /// rule off.
    pub(crate) playback: u64,
    /// Where the user id is: decoded chunk, and row in it (the readers'
    /// chunks in memory, a partition's own when read back from a spill).
    pub(crate) chunk: u32,
    pub(crate) row: u16,
    pub(crate) reader: u16,
    pub(crate) eligible: bool,
    /// No ad impression reported (zero-engagement rule).
    pub(crate) zero_ads: bool,
    /// `playback` holds a verified playback's hash.
    pub(crate) verified: bool,
}

/// Bytes a row holds in [`Blocks`].
pub(crate) const ROW_BYTES: u64 = std::mem::size_of::<Row>() as u64;
impl Row {
    /// Whether the row is billable (before the fraud cap): the only rows
    /// whose exact user id and event id counting ever reads.
    pub(crate) fn billable(&self, min_watch: i32) -> bool {
        self.eligible && self.watch_seconds >= min_watch
    }

    /// The dedup winner order ([`schemas::dedup::CopyOrder`]).
    pub(crate) fn order(&self) -> CopyOrder {
        CopyOrder {
            received_at_us: self.received_at,
            partition: self.partition,
            offset: self.offset,
            fingerprint: self.fp,
        }
    }
}

/// Rows in the first block of [`Blocks`]; each next block is twice as
/// large, up to [`BLOCK`].
const FIRST_BLOCK: usize = 1 << 10;
/// Rows in a full-sized block of [`Blocks`].
const BLOCK: usize = 1 << 16;

/// A growing list of rows in blocks (1 Ki rows, doubling up to 64 Ki):
/// appending never moves rows (a `Vec` doubling would copy, and touch twice
/// the memory), and a short list stays small.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    blocks: Vec<Vec<Row>>,
}

impl Blocks {
    /// Appends a row; returns the bytes allocated for it (a new block's).
    pub(crate) fn push(&mut self, r: Row) -> usize {
        match self.blocks.last_mut() {
            Some(b) if b.len() < b.capacity() => {
                b.push(r);
                0
            }
            last => {
                let size = last.map_or(FIRST_BLOCK, |b| (b.len() * 2).min(BLOCK));
                let mut b = Vec::with_capacity(size);
                b.push(r);
                self.blocks.push(b);
                size * ROW_BYTES as usize
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// Bytes allocated.
    pub(crate) fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.capacity() as u64).sum::<u64>() * ROW_BYTES
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Row> {
        self.blocks.iter().flatten()
    }
}

/// A row's place among a shard's parts: part (16 bits), block (24), row
/// in the block (24).
pub(crate) fn row_at(parts: &[Blocks], pos: u64) -> Row {
    parts[(pos >> 48) as usize].blocks[(pos >> 24) as usize & 0xff_ffff][pos as usize & 0xff_ffff]
}

/// Every row of a shard's parts with its place ([`row_at`]).
pub(crate) fn placed(parts: &[Blocks]) -> impl Iterator<Item = (u64, &Row)> {
    parts.iter().enumerate().flat_map(|(p, part)| {
        part.blocks.iter().enumerate().flat_map(move |(b, rows)| {
            rows.iter()
                .enumerate()
                .map(move |(i, r)| ((p as u64) << 48 | (b as u64) << 24 | i as u64, r))
        })
    })
}
