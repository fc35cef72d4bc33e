//! Flash adapters for boards whose counter pages and frame ring share one flash
//! peripheral: [`Shared`] lends it to both, [`Region`] gives each its own window.

use core::cell::RefCell;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a region access failed: outside the window, or the flash's own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionError(pub NorFlashErrorKind);

impl NorFlashError for RegionError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// `len` bytes of `flash` from `base`, addressed from 0.
#[derive(Debug)]
pub struct Region<F> {
    flash: F,
    base: u32,
    len: u32,
}

impl<F: NorFlash> Region<F> {
    /// The window `[base, base + len)`; both should be erase-page aligned.
    pub const fn new(flash: F, base: u32, len: u32) -> Self {
        Self { flash, base, len }
    }

    fn at(&self, offset: u32, n: usize) -> Result<u32, RegionError> {
        match offset.checked_add(n as u32) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(RegionError(NorFlashErrorKind::OutOfBounds)),
        }
    }
}

impl<F: NorFlash> ErrorType for Region<F> {
    type Error = RegionError;
}

impl<F: NorFlash> ReadNorFlash for Region<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RegionError> {
        let at = self.at(offset, bytes.len())?;
        self.flash
            .read(at, bytes)
            .map_err(|e| RegionError(e.kind()))
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl<F: NorFlash> NorFlash for Region<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RegionError> {
        let at = self.at(from, to.saturating_sub(from) as usize)?;
        self.flash
            .erase(at, at + (to - from))
            .map_err(|e| RegionError(e.kind()))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RegionError> {
        let at = self.at(offset, bytes.len())?;
        self.flash
            .write(at, bytes)
            .map_err(|e| RegionError(e.kind()))
    }
}

/// One flash lent to several users, one access at a time (the node is single-threaded).
#[derive(Debug)]
pub struct Shared<'a, F>(pub &'a RefCell<F>);

impl<F: NorFlash> ErrorType for Shared<'_, F> {
    type Error = RegionError;
}

impl<F: NorFlash> ReadNorFlash for Shared<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RegionError> {
        self.0
            .borrow_mut()
            .read(offset, bytes)
            .map_err(|e| RegionError(e.kind()))
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<F: NorFlash> NorFlash for Shared<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RegionError> {
        self.0
            .borrow_mut()
            .erase(from, to)
            .map_err(|e| RegionError(e.kind()))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RegionError> {
        self.0
            .borrow_mut()
            .write(offset, bytes)
            .map_err(|e| RegionError(e.kind()))
    }
}
