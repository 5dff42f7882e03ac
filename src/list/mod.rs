//! Reading lists: [`reader`] streams CSV rows, [`hygiene`] decides which addresses are mailable.

pub mod hygiene;
pub mod prune;
pub mod reader;
