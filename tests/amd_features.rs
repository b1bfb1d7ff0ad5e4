//! The features the committed model was trained on are the features the
//! code computes now: `models/amd_train_features.csv` was written by
//! `dialgate amd features` and `models/train_amd.py` trained on it; here the
//! same clips are run through the front end again and compared value by
//! value. If this fails, feature code changed without retraining the model.

use std::collections::HashMap;
use std::path::Path;

use dialgate::detect::dataset::clip_features;
use dialgate::detect::features::FEATURE_NAMES;

#[test]
fn rust_features_equal_the_training_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("models/amd_train_features.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first = header.iter().position(|h| *h == FEATURE_NAMES[0]).unwrap();
    assert_eq!(
        &header[first..],
        &FEATURE_NAMES[..],
        "the table's columns are the model's inputs"
    );
    let mut by_file: HashMap<&str, Vec<Vec<f32>>> = HashMap::new();
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        let values = cols[first..]
            .iter()
            .map(|v| v.parse::<f32>().unwrap())
            .collect();
        by_file.entry(cols[0]).or_default().push(values);
    }
    let mut files: Vec<&str> = by_file.keys().copied().collect();
    files.sort();
    // Every 12th clip: all scenarios and every directory (`train/`,
    // `train_clean/`, `train_prompt/`, `train_late/`; the table's paths are
    // relative to fixtures/amd/) are covered, the test stays quick.
    let mut checked = 0;
    let mut clean = 0;
    let mut prompt = 0;
    let mut late = 0;
    for file in files.iter().step_by(12) {
        clean += usize::from(file.starts_with("train_clean/"));
        prompt += usize::from(file.starts_with("train_prompt/"));
        late += usize::from(file.starts_with("train_late/"));
        let fresh = clip_features(&root.join("fixtures/amd").join(file), 100, 8000).unwrap();
        let table = &by_file[file];
        assert_eq!(fresh.len(), table.len(), "{file}: snapshot count");
        for (i, (a, b)) in fresh.iter().zip(table).enumerate() {
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    x == y || (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                    "{file} snapshot {i} {}: code {x}, training table {y}",
                    FEATURE_NAMES[k]
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 55, "checked {checked} clips");
    assert!(clean >= 10, "checked {clean} clean copies");
    assert!(prompt >= 10, "checked {prompt} prompt copies");
    assert!(late >= 10, "checked {late} late copies");
}
