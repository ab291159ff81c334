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

    /// Batches of one, stacked along the batch axis into one batch of `items.len()`. Every item
    /// has batch 1 and the same shape.
    pub fn stack(items: &[&Tensor]) -> Result<Self, ModelError> {
        let first = items
            .first()
            .ok_or_else(|| ModelError::Shape("stack of no tensors".into()))?;
        if first.shape.first() != Some(&1) {
            return Err(ModelError::Shape(format!(
                "stack: items must have batch 1, got shape {:?}",
                first.shape
            )));
        }
        let mut data = Vec::with_capacity(first.data.len() * items.len());
        for t in items {
            if t.shape != first.shape {
                return Err(ModelError::Shape(format!(
                    "stack: shape {:?} differs from {:?}",
                    t.shape, first.shape
                )));
            }
            data.extend_from_slice(&t.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = items.len();
        Self::new(shape, data)
    }

    /// The batch size (the first dimension).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Image `i` of the batch, as a batch of one.
    pub fn batch_item(&self, i: usize) -> Result<Self, ModelError> {
        let n = self.batch();
        if i >= n {
            return Err(ModelError::Shape(format!(
                "batch item {i} of a tensor of shape {:?}",
                self.shape
            )));
        }
        let per = self.data.len() / n;
        let mut shape = self.shape.clone();
        shape[0] = 1;
        Self::new(shape, self.data[i * per..(i + 1) * per].to_vec())
    }

    /// The batch split into batches of one, in order (the inverse of `stack`).
    pub fn unstack(self) -> Vec<Self> {
        let n = self.batch();
        if n == 0 {
            return Vec::new();
        }
        let per = self.data.len() / n;
        let mut shape = self.shape;
        shape[0] = 1;
        if per == 0 {
            return (0..n).map(|_| Self::zeros(shape.clone())).collect();
        }
        self.data
            .chunks(per)
            .map(|c| Self {
                shape: shape.clone(),
                data: c.to_vec(),
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(v: f32) -> Tensor {
        Tensor::new(vec![1, 2, 1, 2], vec![v, v + 1.0, v + 2.0, v + 3.0]).unwrap()
    }

    #[test]
    fn stack_batch_item_and_unstack_are_inverse() {
        let items = [image(0.0), image(10.0), image(20.0)];
        let refs: Vec<&Tensor> = items.iter().collect();
        let b = Tensor::stack(&refs).unwrap();
        assert_eq!(b.shape, vec![3, 2, 1, 2]);
        assert_eq!(b.batch(), 3);
        for (i, t) in items.iter().enumerate() {
            assert_eq!(&b.batch_item(i).unwrap(), t);
        }
        assert!(b.batch_item(3).is_err());
        assert_eq!(b.unstack(), items.to_vec());
    }

    #[test]
    fn stack_refuses_mixed_shapes_and_batches() {
        let wide = Tensor::zeros(vec![1, 2, 2, 2]);
        assert!(Tensor::stack(&[&image(0.0), &wide]).is_err());
        let two = Tensor::zeros(vec![2, 2, 1, 2]);
        assert!(Tensor::stack(&[&two]).is_err());
        assert!(Tensor::stack(&[]).is_err());
    }
}
