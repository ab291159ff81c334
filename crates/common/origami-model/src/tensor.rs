//! A dense float32 tensor, row-major (NCHW for images).

use crate::ModelError;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and data of matching length.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ModelError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(ModelError::Shape(format!(
                "shape {shape:?} holds {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Index of the largest value in each row of a `[N, C]` (or `[N, C, 1, 1]`) tensor, with the
    /// top-k (index, value) pairs, best first.
    pub fn top_k(&self, k: usize) -> Vec<Vec<(usize, f32)>> {
        let n = self.shape.first().copied().unwrap_or(1).max(1);
        let per = self.data.len() / n;
        (0..n)
            .map(|b| {
                let row = &self.data[b * per..(b + 1) * per];
                let mut idx: Vec<usize> = (0..per).collect();
                idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
                idx.into_iter().take(k).map(|i| (i, row[i])).collect()
            })
            .collect()
    }

    /// Largest absolute elementwise difference (∞ when shapes differ).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        if self.shape != other.shape {
            return f32::INFINITY;
        }
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}
