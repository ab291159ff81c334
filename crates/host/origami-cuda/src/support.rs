//! Which operators the CUDA tail has kernels for, and the error that names one it lacks.

use origami_accel::AccelError;
use origami_model::{Model, NodeId, Op};

/// Whether the CUDA tail has kernels for `op` (the operators of VGG, ResNet and MobileNet-v1/v2;
/// the others of the bring-your-own-CNN set run on the CPU accelerator for now).
pub fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::Dense(_)
            | Op::Relu
            | Op::Clip { .. }
            | Op::BatchNorm { .. }
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Softmax
            | Op::Flatten
            | Op::Reshape(_)
    )
}

/// The error for a node the CUDA tail cannot run, naming the operator and the node.
pub(crate) fn unsupported(op: &Op, node: usize) -> AccelError {
    AccelError::BadInput(format!(
        "the CUDA tail has no kernel for operator {} (node {node}); run this model with \
         --accel cpu, or with a split whose tail does not contain it",
        op.kind()
    ))
}

/// The first node at or after `start` that the CUDA tail cannot run, as an error.
pub fn check_supported(model: &Model, start: NodeId) -> Result<(), AccelError> {
    match model
        .nodes
        .iter()
        .enumerate()
        .skip(start.index())
        .find(|(_, n)| !supports(&n.op))
    {
        Some((i, n)) => Err(AccelError::BadInput(format!(
            "the CUDA tail has no kernel for operator {} (node '{}', {i}); run this model with \
             --accel cpu, or with a split whose tail does not contain it",
            n.op.kind(),
            n.name
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_model::zoo;

    /// An operator the CUDA tail has no kernel for is refused by name before anything runs,
    /// only where the tail would run it.
    #[test]
    fn operators_without_kernels_are_named() {
        let mut m = zoo::small();
        let relu = m
            .nodes
            .iter()
            .rposition(|n| matches!(n.op, Op::Relu))
            .unwrap();
        m.nodes[relu].op = Op::Unary(origami_model::Unary::Sigmoid);
        m.nodes[relu].name = "gate".into();
        let err = check_supported(&m, NodeId::new(0)).unwrap_err().to_string();
        assert!(err.contains("Sigmoid") && err.contains("'gate'"), "{err}");
        // A tail that starts after it is fine.
        check_supported(&m, NodeId::new(relu + 1)).unwrap();
        assert!(check_supported(&zoo::resnet_small(), NodeId::new(0)).is_ok());
    }
}
