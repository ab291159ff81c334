//! Shape inference for one node, given the shapes of earlier values (batch dimension first).

use crate::ir::{Node, Op};

pub(crate) fn infer(n: &Node, shapes: &[Vec<usize>]) -> Result<Vec<usize>, String> {
    let x = &shapes[n.inputs[0]];
    let nchw = |x: &Vec<usize>| -> Result<(usize, usize, usize, usize), String> {
        if x.len() != 4 {
            return Err(format!("expects a 4-D NCHW input, got shape {x:?}"));
        }
        Ok((x[0], x[1], x[2], x[3]))
    };
    match &n.op {
        Op::Conv(c) => {
            let (b, ch, h, w) = nchw(x)?;
            if c.groups == 0 || c.in_c % c.groups != 0 || c.out_c % c.groups != 0 {
                return Err(format!(
                    "groups {} must divide in {} and out {} channels",
                    c.groups, c.in_c, c.out_c
                ));
            }
            if ch != c.in_c {
                return Err(format!(
                    "input has {ch} channels, weights expect {}",
                    c.in_c
                ));
            }
            if c.stride.contains(&0) || c.kh == 0 || c.kw == 0 {
                return Err("zero stride or kernel size".into());
            }
            if c.weight.len() != c.out_c * c.k() || c.bias.len() != c.out_c {
                return Err("weight or bias size does not match the declared shape".into());
            }
            let (oh, ow) = c.out_hw(h, w).map_err(|e| e.to_string())?;
            Ok(vec![b, c.out_c, oh, ow])
        }
        Op::Dense(d) => {
            if x.len() != 2 || x[1] != d.in_f {
                return Err(format!("expects [N, {}], got {x:?}", d.in_f));
            }
            if d.weight.len() != d.out_f * d.in_f || d.bias.len() != d.out_f {
                return Err("weight or bias size does not match the declared shape".into());
            }
            Ok(vec![x[0], d.out_f])
        }
        Op::Relu | Op::Clip { .. } | Op::Softmax => Ok(x.clone()),
        Op::BatchNorm { scale, shift } => {
            if x.len() < 2 || scale.len() != x[1] || shift.len() != x[1] {
                return Err(format!(
                    "{} channel parameters for input {x:?}",
                    scale.len()
                ));
            }
            Ok(x.clone())
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (b, ch, h, w) = nchw(x)?;
            let (oh, ow) = p.out_hw(h, w).map_err(|e| e.to_string())?;
            Ok(vec![b, ch, oh, ow])
        }
        Op::GlobalAvgPool => {
            let (b, ch, _, _) = nchw(x)?;
            Ok(vec![b, ch, 1, 1])
        }
        Op::Flatten => Ok(vec![x[0], x[1..].iter().product()]),
        Op::Reshape(dims) => {
            let have: usize = x[1..].iter().product();
            let want: usize = dims.iter().product();
            if have != want {
                return Err(format!("cannot reshape {x:?} to [N, {dims:?}]"));
            }
            let mut s = vec![x[0]];
            s.extend_from_slice(dims);
            Ok(s)
        }
        Op::Add => {
            let y = &shapes[n.inputs[1]];
            if x != y {
                return Err(format!("operands have different shapes {x:?} and {y:?}"));
            }
            Ok(x.clone())
        }
    }
}
