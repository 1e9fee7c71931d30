//! What the rule walk reads before a rule: each slot's [`RuleHead`] and, per 64 slots, a
//! [`RuleBlock`] summing up the heads of every slot a packet may walk there. A table's
//! heads and blocks are written with its rules, before the endpoint's entry points at it.
//!
//! A block covers slots of whichever tables share it, so rewriting it needs their heads
//! too: [`BlockIndex`] keeps the heads this agent wrote, and reads a block's heads back
//! from the kernel the first time it touches one (slots an earlier agent wrote).

use std::collections::HashMap;

use aya::maps::Array;
use fedwall_common::policy::{
    RULE_BLOCK_SLOTS, RULE_BLOCKS_MAP, RULE_HEADS_MAP, RuleBlock, RuleEntry, RuleHead, TableRef,
};

use super::tables::RangeAllocator;
use super::{KernelDataplane, map_err};
use crate::dataplane::DataplaneError;

const SLOTS: usize = RULE_BLOCK_SLOTS as usize;

/// The heads of the rules map's slots, block by block, as far as this agent knows them.
#[derive(Debug, Default)]
pub struct BlockIndex {
    blocks: HashMap<u32, Box<[RuleHead; SLOTS]>>,
}

/// The blocks a table's slots fall in.
fn blocks_of(table: TableRef) -> std::ops::Range<u32> {
    if table.len == 0 {
        return 0..0;
    }
    table.start / RULE_BLOCK_SLOTS..(table.start + table.len - 1) / RULE_BLOCK_SLOTS + 1
}

impl BlockIndex {
    /// Blocks of `table` whose heads this agent has not seen yet.
    pub fn unknown(&self, table: TableRef) -> Vec<u32> {
        blocks_of(table)
            .filter(|block| !self.blocks.contains_key(block))
            .collect()
    }

    /// Takes in a block's heads as the kernel holds them.
    pub fn learn(&mut self, block: u32, heads: [RuleHead; SLOTS]) {
        self.blocks.insert(block, Box::new(heads));
    }

    /// Records the heads of `table`'s rules and returns the new summary of every block it
    /// touches: the heads of the slots `ranges` does not hold free (live tables, and
    /// released ones a packet may still be walking). Blocks must be known (see `unknown`).
    pub fn write(
        &mut self,
        table: TableRef,
        heads: &[RuleHead],
        ranges: &RangeAllocator,
    ) -> Vec<(u32, RuleBlock)> {
        for (offset, head) in heads.iter().enumerate() {
            let slot = table.start + offset as u32;
            let block = self
                .blocks
                .entry(slot / RULE_BLOCK_SLOTS)
                .or_insert_with(|| Box::new([RuleHead::default(); SLOTS]));
            block[(slot % RULE_BLOCK_SLOTS) as usize] = *head;
        }
        blocks_of(table)
            .map(|block| {
                let first = block * RULE_BLOCK_SLOTS;
                let heads = self.blocks.get(&block).map(|heads| {
                    heads
                        .iter()
                        .enumerate()
                        .filter(|(offset, _)| !ranges.is_free(first + *offset as u32))
                        .map(|(_, head)| head)
                });
                (block, RuleBlock::of(heads.into_iter().flatten()))
            })
            .collect()
    }
}

impl KernelDataplane {
    /// Writes the heads of a table's freshly written rules, then the blocks it touches.
    pub(super) fn write_heads_and_blocks(
        &mut self,
        table: TableRef,
        rules: &[RuleEntry],
    ) -> Result<(), DataplaneError> {
        let heads: Vec<RuleHead> = rules.iter().map(RuleHead::of).collect();
        let unknown = self.blocks.unknown(table);
        let mut head_map = Array::<_, RuleHead>::try_from(self.programs.map_mut(RULE_HEADS_MAP)?)
            .map_err(map_err(RULE_HEADS_MAP))?;
        for block in unknown {
            let mut read = [RuleHead::default(); SLOTS];
            for (offset, head) in read.iter_mut().enumerate() {
                *head = head_map
                    .get(&(block * RULE_BLOCK_SLOTS + offset as u32), 0)
                    .map_err(map_err(RULE_HEADS_MAP))?;
            }
            self.blocks.learn(block, read);
        }
        for (offset, head) in heads.iter().enumerate() {
            head_map
                .set(table.start + offset as u32, head, 0)
                .map_err(map_err(RULE_HEADS_MAP))?;
        }
        let summaries = self.blocks.write(table, &heads, &self.ranges);
        let mut block_map =
            Array::<_, RuleBlock>::try_from(self.programs.map_mut(RULE_BLOCKS_MAP)?)
                .map_err(map_err(RULE_BLOCKS_MAP))?;
        for (block, summary) in summaries {
            block_map
                .set(block, &summary, 0)
                .map_err(map_err(RULE_BLOCKS_MAP))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fedwall_common::policy::HEAD_SRC_SET;

    use super::*;

    /// A head needing the source in set slot `slot`.
    fn needing(slot: u16) -> RuleHead {
        let (src_word, src_bit) = fedwall_common::policy::SetBitmap::position(slot);
        RuleHead {
            flags: HEAD_SRC_SET,
            src_word,
            src_bit,
            ..RuleHead::default()
        }
    }

    #[test]
    fn free_slots_do_not_open_a_block_and_released_ones_stay_in_it() {
        let mut ranges = RangeAllocator::default();
        let mut index = BlockIndex::default();
        let a = ranges.alloc(10).expect("space");
        let summaries = index.write(a, &[needing(3); 10], &ranges);
        let [(0, block)] = summaries[..] else {
            panic!("one block: {summaries:?}");
        };
        assert_eq!(block.source.filtered, 1, "the 54 free slots open nothing");
        assert_eq!(block.source.words[0], 1 << 3);
        assert_eq!(block.destination.filtered, 0);

        // `a` is released but may still be walked: its rules stay in the summary.
        ranges.release(a);
        let b = ranges.alloc(5).expect("space");
        assert_eq!(b.start, 10);
        let summaries = index.write(b, &[needing(64); 5], &ranges);
        let [(0, block)] = summaries[..] else {
            panic!("one block: {summaries:?}");
        };
        assert_eq!((block.source.words[0], block.source.words[1]), (1 << 3, 1));
        assert_eq!(block.source.presence, 0b11);
    }

    #[test]
    fn heads_read_back_from_the_kernel_count_like_written_ones() {
        let mut ranges = RangeAllocator::default();
        let mut index = BlockIndex::default();
        // An earlier agent's table at slots 0..10, one rule of it with no set condition.
        ranges.reserve(TableRef { start: 0, len: 10 });
        let mut kernel = [RuleHead::default(); SLOTS];
        kernel[..10].fill(needing(1));
        kernel[5] = RuleHead::default();
        let table = ranges.alloc(3).expect("space");
        assert_eq!(index.unknown(table), vec![0]);
        index.learn(0, kernel);
        assert!(index.unknown(table).is_empty());
        let summaries = index.write(table, &[needing(2); 3], &ranges);
        assert_eq!(
            summaries[0].1.source.filtered, 0,
            "the adopted open rule opens the block"
        );
    }

    #[test]
    fn a_table_across_a_block_boundary_rewrites_both_blocks() {
        let table = TableRef { start: 60, len: 10 };
        assert_eq!(blocks_of(table), 0..2);
        assert_eq!(blocks_of(TableRef { start: 64, len: 64 }), 1..2);
        assert_eq!(blocks_of(TableRef::default()), 0..0);
    }
}
