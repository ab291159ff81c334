//! The one fusion pass (`Model::relu_fusions`) and the float executor that reads it: a linear
//! node is fused with the ReLU after it exactly when that ReLU is its only reader, and a fused
//! run gives the same bits as the unfused one (the observed run executes every node alone).

use origami_model::{exec, zoo, Model, Op};

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Nodes that the pass must mark, by its definition, computed here independently.
fn expected(m: &Model) -> Vec<bool> {
    (0..m.nodes.len())
        .map(|i| {
            let n = &m.nodes[i];
            let readers: Vec<usize> = (0..m.nodes.len())
                .filter(|&j| m.nodes[j].inputs.contains(&n.output))
                .collect();
            n.op.is_linear()
                && readers == [i + 1]
                && matches!(m.nodes[i + 1].op, Op::Relu)
                && m.nodes[i + 1].inputs.len() == 1
                && m.output != n.output
        })
        .collect()
}

#[test]
fn the_pass_marks_linear_nodes_whose_only_reader_is_the_next_relu() {
    for m in [
        zoo::fashion(),
        zoo::small(),
        zoo::resnet_small(),
        zoo::vgg16(32),
    ] {
        let marks = m.relu_fusions();
        assert_eq!(marks, expected(&m), "{}", m.name);
        assert!(marks.iter().any(|&f| f), "{}: nothing fused", m.name);
        // Never the output, never a non-linear node.
        for (i, &f) in marks.iter().enumerate() {
            if f {
                assert!(m.nodes[i].op.is_linear());
                assert_ne!(m.nodes[i].output, m.output);
            }
        }
    }
}

#[test]
fn fused_runs_give_the_same_bits_as_unfused_runs() {
    for m in [
        zoo::fashion(),
        zoo::small(),
        zoo::resnet_small(),
        zoo::vgg16(32),
    ] {
        let x = zoo::seeded_input(&m, 7);
        let fused = exec::run(&m, &x).unwrap();
        let mut env = vec![None; m.num_values()];
        env[0] = Some(x.clone());
        let unfused =
            exec::run_observed(&m, origami_model::NodeId::new(0), env, |_, _| {}).unwrap();
        assert_eq!(fused.shape, unfused.shape, "{}", m.name);
        assert!(
            bits_equal(&fused.data, &unfused.data),
            "{}: fused run differs",
            m.name
        );
    }
}
