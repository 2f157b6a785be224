//! What a model's answers on labelled inputs say about it: accuracy, per-class precision and
//! recall, and the confusion matrix, as `chiron evaluate` prints them (or as JSON).

use serde::Serialize;

/// Answers tallied against the true labels, as they arrive batch by batch.
#[derive(Clone, Debug)]
pub struct Tally {
    width: usize,
    /// `confusion[truth][predicted]`.
    confusion: Vec<Vec<u64>>,
    examples: u64,
    top_k_correct: u64,
    /// Answers naming a class the model does not have (a broken program's doing).
    out_of_range: u64,
}

impl Tally {
    /// An empty tally for a model of `classes` classes answering `width` classes per input
    /// (1 for label answers, k for top-k).
    pub fn new(classes: usize, width: usize) -> Self {
        Self {
            width: width.max(1),
            confusion: vec![vec![0; classes]; classes],
            examples: 0,
            top_k_correct: 0,
            out_of_range: 0,
        }
    }

    /// Adds one batch: `answers` holds `width` classes per input, best first, and `labels`
    /// the true class of each input.
    pub fn add(&mut self, answers: &[u32], labels: &[u32]) {
        for (row, &truth) in answers.chunks_exact(self.width).zip(labels) {
            self.examples += 1;
            self.top_k_correct += u64::from(row.contains(&truth));
            let cell = self
                .confusion
                .get_mut(truth as usize)
                .and_then(|r| r.get_mut(row[0] as usize));
            match cell {
                Some(cell) => *cell += 1,
                None => self.out_of_range += 1,
            }
        }
    }

    /// The report, with `class_names[i]` naming class `i`.
    pub fn finish(self, class_names: &[String]) -> Evaluation {
        let classes = self.confusion.len();
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let correct: u64 = (0..classes).map(|c| self.confusion[c][c]).sum();
        let per_class = (0..classes)
            .map(|c| {
                let support: u64 = self.confusion[c].iter().sum();
                let predicted: u64 = self.confusion.iter().map(|row| row[c]).sum();
                let hits = self.confusion[c][c];
                let precision = ratio(hits, predicted);
                let recall = ratio(hits, support);
                let f1 = match (precision, recall) {
                    (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
                    (Some(_), Some(_)) => Some(0.0),
                    _ => None,
                };
                ClassReport {
                    class: class_names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    support,
                    predicted,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect();
        Evaluation {
            examples: self.examples,
            accuracy: ratio(correct, self.examples).unwrap_or(0.0),
            top_k: self.width,
            top_k_accuracy: (self.width > 1)
                .then(|| ratio(self.top_k_correct, self.examples).unwrap_or(0.0)),
            out_of_range: self.out_of_range,
            classes: per_class,
            confusion: self.confusion,
        }
    }
}

/// One class's figures. A figure whose denominator is zero (a class never predicted, or
/// absent from the inputs) is `None`, not a made-up zero.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassReport {
    /// The class's name.
    pub class: String,
    /// Inputs of this class.
    pub support: u64,
    /// Inputs the model labelled with this class.
    pub predicted: u64,
    /// Of the inputs labelled with this class, the share that were.
    pub precision: Option<f64>,
    /// Of the inputs of this class, the share labelled so.
    pub recall: Option<f64>,
    /// The harmonic mean of precision and recall.
    pub f1: Option<f64>,
}

/// A model's figures on labelled inputs, through its black-box answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Inputs answered.
    pub examples: u64,
    /// The share whose best answer was the true class.
    pub accuracy: f64,
    /// Classes per answer.
    pub top_k: usize,
    /// With top-k answers, the share whose true class was among them.
    pub top_k_accuracy: Option<f64>,
    /// Answers naming no class of the model.
    pub out_of_range: u64,
    /// Per class, in class order.
    pub classes: Vec<ClassReport>,
    /// `confusion[truth][predicted]`: inputs of class `truth` labelled `predicted`.
    pub confusion: Vec<Vec<u64>>,
}

/// The most classes whose confusion matrix is printed as text (larger ones are in `--json`).
const MAX_PRINTED_MATRIX: usize = 20;

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "accuracy on {} held-out examples through black-box queries: {:.2}%",
            self.examples,
            100.0 * self.accuracy
        )?;
        if let Some(top_k) = self.top_k_accuracy {
            writeln!(f, "top-{} accuracy: {:.2}%", self.top_k, 100.0 * top_k)?;
        }
        if self.out_of_range > 0 {
            writeln!(
                f,
                "{} answers named a class the model does not have",
                self.out_of_range
            )?;
        }
        let name_width = self
            .classes
            .iter()
            .map(|c| c.class.chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 24);
        let percent =
            |x: Option<f64>| x.map_or_else(|| "—".to_owned(), |x| format!("{:.1}", 100.0 * x));
        writeln!(f)?;
        writeln!(
            f,
            "{:<name_width$}  {:>9}  {:>6}  {:>6}  {:>7}",
            "class", "precision", "recall", "f1", "support"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:<name_width$}  {:>9}  {:>6}  {:>6}  {:>7}",
                truncate(&c.class, name_width),
                percent(c.precision),
                percent(c.recall),
                percent(c.f1),
                c.support
            )?;
        }
        let n = self.confusion.len();
        if n > MAX_PRINTED_MATRIX {
            return writeln!(
                f,
                "\n(the {n}×{n} confusion matrix is in the --json report)"
            );
        }
        writeln!(
            f,
            "\nconfusion matrix (rows: true class, columns: answered class)"
        )?;
        let cell = self
            .confusion
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .max()
            .unwrap_or(1)
            .max(n.to_string().len());
        write!(f, "{:<name_width$} ", "")?;
        for j in 0..n {
            write!(f, " {j:>cell$}")?;
        }
        writeln!(f)?;
        for (i, row) in self.confusion.iter().enumerate() {
            let name = self.classes.get(i).map_or("", |c| c.class.as_str());
            write!(f, "{:<name_width$} ", truncate(name, name_width))?;
            for v in row {
                write!(f, " {v:>cell$}")?;
            }
            writeln!(f, "   ({i})")?;
        }
        Ok(())
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        ["cat", "dog", "eel"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn figures_follow_from_the_confusion_matrix() {
        let mut tally = Tally::new(3, 1);
        // truth:   0 0 0 1 1 2
        // answer:  0 0 1 1 1 0
        tally.add(&[0, 0, 1], &[0, 0, 0]);
        tally.add(&[1, 1, 0], &[1, 1, 2]);
        let e = tally.finish(&names(3));
        assert_eq!(e.examples, 6);
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(
            e.confusion,
            vec![vec![2, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
        let cat = &e.classes[0];
        assert_eq!((cat.support, cat.predicted), (3, 3));
        assert_eq!(cat.precision, Some(2.0 / 3.0));
        assert_eq!(cat.recall, Some(2.0 / 3.0));
        let dog = &e.classes[1];
        assert_eq!(dog.precision, Some(2.0 / 3.0));
        assert_eq!(dog.recall, Some(1.0));
        // Never predicted: no precision rather than a made-up one.
        let eel = &e.classes[2];
        assert_eq!((eel.precision, eel.recall, eel.f1), (None, Some(0.0), None));
        assert_eq!(e.top_k_accuracy, None);
        let text = e.to_string();
        assert!(text.contains("accuracy on 6 held-out examples"), "{text}");
        assert!(text.contains("confusion matrix"), "{text}");
    }

    #[test]
    fn top_k_answers_count_a_hit_anywhere_in_the_row() {
        let mut tally = Tally::new(3, 2);
        tally.add(&[1, 0, 2, 1, 0, 2], &[0, 1, 1]);
        let e = tally.finish(&names(3));
        assert!((e.accuracy - 0.0).abs() < 1e-12);
        assert_eq!(e.top_k_accuracy, Some(2.0 / 3.0));
    }

    #[test]
    fn an_answer_outside_the_classes_is_counted_not_a_panic() {
        let mut tally = Tally::new(2, 1);
        tally.add(&[7, 0], &[0, 9]);
        let e = tally.finish(&names(2));
        assert_eq!(e.out_of_range, 2);
        assert_eq!(e.examples, 2);
        assert_eq!(e.accuracy, 0.0);
    }
}
