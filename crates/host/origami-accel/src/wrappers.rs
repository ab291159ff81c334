//! Accelerators that wrap another one: `Recording` keeps a copy of everything the untrusted
//! side receives; `Tampering` returns wrong field results (a malicious accelerator, for tests).

use std::sync::Arc;

use origami_model::{Model, NodeId, Tensor, ValueId};

use crate::{AccelError, Accelerator, FieldLayer};

/// One thing the untrusted side received.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A blinded input of a field layer.
    Field { layer: u16, blinded: Vec<u32> },
    /// The plain values handed to the tail.
    Tail {
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    },
}

/// Records every input the wrapped accelerator receives, then forwards it.
pub struct Recording<A> {
    pub inner: A,
    pub records: Vec<Record>,
}

impl<A: Accelerator> Recording<A> {
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            records: Vec::new(),
        }
    }
}

impl<A: Accelerator> Accelerator for Recording<A> {
    fn name(&self) -> String {
        format!("recording({})", self.inner.name())
    }
    fn prepare(
        &mut self,
        model: Arc<Model>,
        field_layers: &[FieldLayer],
    ) -> Result<(), AccelError> {
        self.inner.prepare(model, field_layers)
    }
    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError> {
        self.records.push(Record::Field {
            layer,
            blinded: blinded.to_vec(),
        });
        self.inner.field_linear(layer, blinded)
    }
    fn run_tail(
        &mut self,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError> {
        self.records.push(Record::Tail {
            start,
            values: values.clone(),
        });
        self.inner.run_tail(start, values)
    }
    fn synchronize(&mut self) -> Result<(), AccelError> {
        self.inner.synchronize()
    }
}

/// A malicious accelerator: adds `delta` (1 unless set; mod p) to one output element of the
/// chosen field layers.
pub struct Tampering<A> {
    pub inner: A,
    /// Layers to tamper with; `None` tampers with every layer.
    pub layers: Option<Vec<u16>>,
    /// Which output element to change (taken modulo the output length).
    pub position: usize,
    /// What is added to it (e.g. ⌊p/2⌋: the value-oracle attack on saturation errors).
    pub delta: u32,
}

impl<A: Accelerator> Tampering<A> {
    pub fn new(inner: A, layers: Option<Vec<u16>>) -> Self {
        Self {
            inner,
            layers,
            position: 0,
            delta: 1,
        }
    }
}

impl<A: Accelerator> Accelerator for Tampering<A> {
    fn name(&self) -> String {
        format!("tampering({})", self.inner.name())
    }
    fn prepare(
        &mut self,
        model: Arc<Model>,
        field_layers: &[FieldLayer],
    ) -> Result<(), AccelError> {
        self.inner.prepare(model, field_layers)
    }
    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError> {
        let mut y = self.inner.field_linear(layer, blinded)?;
        if self.layers.as_ref().is_none_or(|l| l.contains(&layer)) && !y.is_empty() {
            let i = self.position % y.len();
            y[i] = origami_field::add(y[i], self.delta % origami_field::P);
        }
        Ok(y)
    }
    fn run_tail(
        &mut self,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError> {
        self.inner.run_tail(start, values)
    }
    fn synchronize(&mut self) -> Result<(), AccelError> {
        self.inner.synchronize()
    }
}
