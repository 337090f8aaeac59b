//! Quality of generated images as numbers: FID in the classifier's feature space, an
//! Inception-Score analogue, and class coverage, all against a data set's held-out test split.
//!
//! - **FID** (Fréchet distance): fit a Gaussian to the 128 classifier features of the real
//!   test images and one to the generated images'; `|μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`.
//!   Lower is better; two samples of real images are near 0, noise is far.
//! - **IS analogue**: `exp(E_x KL(p(y|x) ‖ p(y)))` with the classifier's class probabilities;
//!   1 (one class, or no confident class) to 10 (confident and balanced).
//! - **Coverage**: the histogram of predicted classes and how many classes get at least a
//!   quarter of their fair share.
//! - **Class accuracy** (conditional models): the share of images the classifier assigns to
//!   the class they were asked for, overall and per class.

use std::path::Path;

use anyhow::{bail, Context};

/// Classes a digit classifier tells apart.
pub const CLASSES: usize = 10;
/// Pixels of the images measured: 28x28 grayscale, one byte each.
pub const INPUT_PIXELS: usize = 28 * 28;
/// One vector of f64 per image.
pub type Rows = Vec<Vec<f64>>;

/// The network whose space the metrics are measured in: a feature vector (FID) and class
/// probabilities (the IS analogue, coverage, class accuracy) for each image. The digit
/// classifier of `mcugan-train` is one; this crate needs no training framework to use it.
pub trait FeatureExtractor {
    /// Features and class probabilities of gray-level images (28x28 each, one after another).
    fn features_and_probabilities(&self, pixels: &[u8]) -> anyhow::Result<(Rows, Rows)>;

    /// Predicted class of every image.
    fn predict(&self, pixels: &[u8]) -> anyhow::Result<Vec<usize>> {
        let (_, p) = self.features_and_probabilities(pixels)?;
        Ok(p.iter().map(|row| argmax(row)).collect())
    }
}

/// Index of the largest value (the first, on ties).
pub fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The metrics of one set of images.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Metrics {
    /// What was measured.
    pub source: String,
    /// Images measured.
    pub images: usize,
    /// Fréchet distance to the real test images in classifier-feature space.
    pub fid: f64,
    /// The Inception-Score analogue.
    pub inception_score: f64,
    /// Share of images predicted as each class.
    pub class_shares: Vec<f64>,
    /// Classes with at least a quarter of their fair share of the images.
    pub classes_covered: usize,
    /// How often the classifier sees the asked class, for images of a conditional model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_accuracy: Option<ClassAccuracy>,
}

/// How well a conditional model draws the classes it is asked for, as the classifier sees it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassAccuracy {
    /// Share of all images classified as their asked class.
    pub overall: f64,
    /// Per asked class: the share of its images classified as it (`NaN` for a class never
    /// asked for).
    pub per_class: Vec<f64>,
}

/// The class accuracy of images whose classifier `predicted` classes were `asked` for.
pub fn class_accuracy(predicted: &[usize], asked: &[u16], classes: usize) -> ClassAccuracy {
    let mut hits = vec![0usize; classes];
    let mut totals = vec![0usize; classes];
    for (&p, &a) in predicted.iter().zip(asked) {
        let a = usize::from(a);
        if a < classes {
            totals[a] += 1;
            hits[a] += usize::from(p == a);
        }
    }
    let all: usize = totals.iter().sum();
    ClassAccuracy {
        overall: hits.iter().sum::<usize>() as f64 / all.max(1) as f64,
        per_class: hits
            .iter()
            .zip(&totals)
            .map(|(&h, &t)| {
                if t == 0 {
                    f64::NAN
                } else {
                    h as f64 / t as f64
                }
            })
            .collect(),
    }
}

/// A Gaussian fitted to feature vectors.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    /// Mean.
    pub mean: Vec<f64>,
    /// Covariance (unbiased), row-major `d x d`.
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Fits mean and covariance; needs at least two vectors of the same length.
    pub fn fit(features: &[Vec<f64>]) -> anyhow::Result<Self> {
        let n = features.len();
        if n < 2 {
            bail!("need at least 2 images for FID, got {n}");
        }
        let d = features[0].len();
        if features.iter().any(|f| f.len() != d) {
            bail!("feature vectors of different lengths");
        }
        let mut mean = vec![0.0; d];
        for f in features {
            for (m, x) in mean.iter_mut().zip(f) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for f in features {
            for ((c, x), m) in centred.iter_mut().zip(f).zip(&mean) {
                *c = x - m;
            }
            for i in 0..d {
                let ci = centred[i];
                for j in i..d {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / (n as f64 - 1.0);
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Ok(Self { mean, cov })
    }

    /// The Fréchet distance between the two Gaussians.
    pub fn frechet_distance(&self, other: &FeatureStats) -> f64 {
        let d = self.mean.len();
        let mean_term: f64 = self
            .mean
            .iter()
            .zip(&other.mean)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
        // tr((Σ₁ Σ₂)^½) = tr((Σ₁^½ Σ₂ Σ₁^½)^½), and the latter is symmetric: its square root's
        // trace is the sum of the square roots of its eigenvalues.
        let root1 = symmetric_sqrt(&self.cov, d);
        let inner = matmul(&matmul(&root1, &other.cov, d), &root1, d);
        let (values, _) = symmetric_eigen(&inner, d);
        let cross: f64 = values.iter().map(|&v| v.max(0.0).sqrt()).sum();
        (mean_term + trace(&self.cov) + trace(&other.cov) - 2.0 * cross).max(0.0)
    }
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// The square root of a symmetric positive semi-definite matrix (negative eigenvalues from
/// rounding are taken as 0).
pub fn symmetric_sqrt(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, d);
    let mut out = vec![0.0; d * d];
    for (k, &value) in values.iter().enumerate() {
        let root = value.max(0.0).sqrt();
        if root == 0.0 {
            continue;
        }
        for i in 0..d {
            let vik = vectors[i * d + k] * root;
            for j in 0..d {
                out[i * d + j] += vik * vectors[j * d + k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the returned row-major `d x d` matrix) of a
/// symmetric matrix, by nalgebra's `SymmetricEigen`.
pub fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let eigen = nalgebra::SymmetricEigen::new(nalgebra::DMatrix::from_row_slice(d, d, m));
    let values = eigen.eigenvalues.iter().copied().collect();
    let mut vectors = Vec::with_capacity(d * d);
    for i in 0..d {
        for k in 0..d {
            vectors.push(eigen.eigenvectors[(i, k)]);
        }
    }
    (values, vectors)
}

/// `exp(E_x KL(p(y|x) ‖ p(y)))`.
pub fn inception_score(probabilities: &[Vec<f64>]) -> f64 {
    if probabilities.is_empty() {
        return f64::NAN;
    }
    let k = probabilities[0].len();
    let mut marginal = vec![0.0; k];
    for p in probabilities {
        for (m, x) in marginal.iter_mut().zip(p) {
            *m += x / probabilities.len() as f64;
        }
    }
    let kl: f64 = probabilities
        .iter()
        .map(|p| {
            p.iter()
                .zip(&marginal)
                .filter(|(x, _)| **x > 0.0)
                .map(|(x, m)| x * (x.ln() - m.max(1e-300).ln()))
                .sum::<f64>()
        })
        .sum::<f64>()
        / probabilities.len() as f64;
    kl.exp()
}

/// Share of images predicted as each class.
pub fn class_shares(probabilities: &[Vec<f64>]) -> Vec<f64> {
    let mut shares = vec![0.0; CLASSES];
    for p in probabilities {
        shares[argmax(p)] += 1.0 / probabilities.len() as f64;
    }
    shares
}

/// Classes with at least a quarter of their fair share.
pub fn classes_covered(shares: &[f64]) -> usize {
    let threshold = 0.25 / shares.len().max(1) as f64;
    shares.iter().filter(|&&s| s >= threshold).count()
}

/// Measures images against the real test images' feature statistics.
pub struct Evaluator<C> {
    classifier: C,
    real: FeatureStats,
}

impl<C: FeatureExtractor> Evaluator<C> {
    /// An evaluator whose reference is `real_test` (gray levels, 28x28 each).
    pub fn new(classifier: C, real_test: &[u8]) -> anyhow::Result<Self> {
        let (features, _) = classifier.features_and_probabilities(real_test)?;
        let real = FeatureStats::fit(&features).context("the real test images")?;
        Ok(Self { classifier, real })
    }

    /// The classifier in use.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The metrics of `pixels` (28x28 gray-level images, one after another).
    pub fn measure(&self, source: &str, pixels: &[u8]) -> anyhow::Result<Metrics> {
        self.measure_asked(source, pixels, None)
    }

    /// [`Evaluator::measure`], with the class each image was asked for when the images
    /// come from a conditional model: adds [`Metrics::class_accuracy`].
    pub fn measure_asked(
        &self,
        source: &str,
        pixels: &[u8],
        asked: Option<&[u16]>,
    ) -> anyhow::Result<Metrics> {
        let (features, probabilities) = self.classifier.features_and_probabilities(pixels)?;
        if let Some(asked) = asked {
            if asked.len() != probabilities.len() {
                bail!(
                    "{source}: {} asked classes for {} images",
                    asked.len(),
                    probabilities.len()
                );
            }
        }
        let stats = FeatureStats::fit(&features).with_context(|| source.to_string())?;
        let class_shares = class_shares(&probabilities);
        let class_accuracy = asked.map(|asked| {
            let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
            class_accuracy(&predicted, asked, CLASSES)
        });
        Ok(Metrics {
            class_accuracy,
            source: source.to_string(),
            images: features.len(),
            fid: self.real.frechet_distance(&stats),
            inception_score: inception_score(&probabilities),
            classes_covered: classes_covered(&class_shares),
            class_shares,
        })
    }
}

/// The metrics as a Markdown table.
pub fn markdown_table(rows: &[Metrics]) -> String {
    let mut out = String::from(
        "| images | n | FID ↓ | IS ↑ | classes covered | class shares 0…9 (%) |\n|---|---:|---:|---:|---:|---|\n",
    );
    for m in rows {
        let shares: Vec<String> = m
            .class_shares
            .iter()
            .map(|s| format!("{:.0}", s * 100.0))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {}/{} | {} |\n",
            m.source,
            m.images,
            m.fid,
            m.inception_score,
            m.classes_covered,
            m.class_shares.len(),
            shares.join(" ")
        ));
    }
    out
}

/// The class accuracy of the rows that have one, as a Markdown table (empty when none has).
pub fn class_accuracy_table(rows: &[Metrics]) -> String {
    let mut out = String::new();
    for m in rows {
        let Some(accuracy) = &m.class_accuracy else {
            continue;
        };
        if out.is_empty() {
            out.push_str(
                "| images | n | class accuracy ↑ | per asked class 0…9 (%) |\n|---|---:|---:|---|\n",
            );
        }
        let per: Vec<String> = accuracy
            .per_class
            .iter()
            .map(|a| {
                if a.is_nan() {
                    "–".to_string()
                } else {
                    format!("{:.0}", a * 100.0)
                }
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {:.2} % | {} |\n",
            m.source,
            m.images,
            accuracy.overall * 100.0,
            per.join(" ")
        ));
    }
    out
}

/// Reads every 28x28 8-bit grayscale PNG in `dir` (sorted by name) as gray levels.
pub fn load_png_folder(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} has no PNG images", dir.display());
    }
    let mut pixels = Vec::with_capacity(paths.len() * INPUT_PIXELS);
    for path in &paths {
        let picture = crate::picture::load_png(path)?;
        if (picture.width, picture.height) != (28, 28) {
            bail!(
                "{} is {}x{}; eval reads 28x28 images",
                path.display(),
                picture.width,
                picture.height
            );
        }
        pixels.extend_from_slice(&picture.pixels);
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let m = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let root = symmetric_sqrt(&m, 3);
        let back = matmul(&root, &root, 3);
        for (a, b) in back.iter().zip(&m) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
    }

    #[test]
    fn frechet_distance_of_known_gaussians() {
        // Diagonal covariances: FID = |μ1−μ2|² + Σ (σ1 − σ2)².
        let a = FeatureStats {
            mean: vec![0.0, 0.0],
            cov: vec![4.0, 0.0, 0.0, 1.0],
        };
        let b = FeatureStats {
            mean: vec![1.0, 2.0],
            cov: vec![1.0, 0.0, 0.0, 9.0],
        };
        let expected = 1.0 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((a.frechet_distance(&b) - expected).abs() < 1e-9);
        assert!(a.frechet_distance(&a).abs() < 1e-9);
    }

    #[test]
    fn inception_score_bounds() {
        let confident_balanced: Vec<Vec<f64>> = (0..10)
            .map(|i| (0..10).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        assert!((inception_score(&confident_balanced) - 10.0).abs() < 1e-9);
        let one_class = vec![confident_balanced[3].clone(); 10];
        assert!((inception_score(&one_class) - 1.0).abs() < 1e-9);
        let shares = class_shares(&one_class);
        assert_eq!(classes_covered(&shares), 1);
        assert_eq!(classes_covered(&class_shares(&confident_balanced)), 10);
    }
}
