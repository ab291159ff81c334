//! The audit-driven split policy: which split `--split auto` and the default `origami`
//! placement take for a model, and what the recorded audit says of a split. The recorded audit
//! of the built-in model (`origami audit` with its defaults, the run docs/AUDIT.md shows) is an
//! asset of this crate.

use std::path::{Path, PathBuf};

use origami_model::{Model, Op};

use crate::audit::{hex, AuditReport, IDENTIFICATION_POOL};
use crate::AuditError;

/// `assets/recorded-audit.json`: the recorded audit of the built-in model.
pub const RECORDED_AUDIT: &str = include_str!("../assets/recorded-audit.json");

/// Where the recorded audit comes from, as error messages and output name it.
pub const RECORDED_NAME: &str = "the recorded audit of the built-in model";

/// The recorded audit of the built-in model.
pub fn recorded() -> Result<AuditReport, AuditError> {
    serde_json::from_str(RECORDED_AUDIT)
        .map_err(|e| AuditError::Report(format!("{RECORDED_NAME}: {e}")))
}

/// The split the audit recommended for `model`: from `path` (default ./audit/audit.json when it
/// exists), else from the recorded audit. Returns the split and where it came from.
pub fn audited_split(model: &Model, path: Option<&Path>) -> Result<(usize, String), AuditError> {
    let (report, from) = audit_report(path)?;
    let from = from.describe();
    Ok((recommended(&report, model, &from)?, from))
}

/// Where an audit came from.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditSource {
    /// An `audit.json` file.
    File(PathBuf),
    /// The recorded audit of the built-in model ([`RECORDED_AUDIT`]).
    Recorded,
}

impl AuditSource {
    /// For messages: the file, or the recorded audit by name.
    pub fn describe(&self) -> String {
        match self {
            AuditSource::File(p) => p.display().to_string(),
            AuditSource::Recorded => format!("{RECORDED_NAME} (docs/AUDIT.md)"),
        }
    }

    /// Short, for the privacy line: the file, or the document that shows the recorded audit.
    pub fn cite(&self) -> String {
        match self {
            AuditSource::File(p) => p.display().to_string(),
            AuditSource::Recorded => "docs/AUDIT.md".to_string(),
        }
    }
}

/// The audit `--split auto` and the privacy verdict read: `path`, else ./audit/audit.json when
/// it exists, else the recorded audit; with where it came from.
pub fn audit_report(path: Option<&Path>) -> Result<(AuditReport, AuditSource), AuditError> {
    let default = Path::new("audit/audit.json");
    let file = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Ok((recorded()?, AuditSource::Recorded)),
    };
    Ok((crate::report::load(file)?, AuditSource::File(file.into())))
}

/// The recommended split of `report`, checked to be an audit of `model`.
pub fn recommended(report: &AuditReport, model: &Model, from: &str) -> Result<usize, AuditError> {
    let hash = hex(&model.hash());
    if report.model_hash != hash {
        return Err(AuditError::WrongModel {
            from: from.to_string(),
            audited: report.model.clone(),
            audited_hash: report.model_hash.chars().take(16).collect(),
            model: model.name.clone(),
            hash: hash[..16].to_string(),
        });
    }
    report.recommended_split.ok_or_else(|| AuditError::NoSplit {
        from: from.to_string(),
        model: model.name.clone(),
        max_ssim: report.policy.max_ssim,
        max_accuracy: report.policy.max_accuracy,
    })
}

/// What the audit (`path`, else ./audit/audit.json, else the recorded one: [`audit_report`])
/// says about `split` of `model`, as one line for the user.
pub fn verdict(model: &Model, split: usize, path: Option<&Path>) -> String {
    let (report, from) = match audit_report(path) {
        Ok((r, from)) if r.model_hash == hex(&model.hash()) => (r, from),
        Ok((_, from)) => {
            return format!(
                "privacy: {} is not an audit of {}; run `origami audit --model …` before trusting a split",
                from.describe(),
                model.name
            )
        }
        Err(e) => return format!("privacy: no audit of {} ({e})", model.name),
    };
    let from = from.cite();
    let at = report
        .layers
        .iter()
        .find(|l| l.split == split)
        .map(|l| {
            let s = l.strongest();
            // The best identification rate, where the audit measured it, with its attack.
            let id = l
                .attacks
                .iter()
                .filter_map(|a| a.identification.map(|r| (r, a)))
                .max_by(|x, y| x.0.total_cmp(&y.0))
                .map(|(r, a)| {
                    format!(
                        ", and the {} attack picks out {:.0} % of inputs among {} candidates",
                        a.attack,
                        100.0 * r,
                        report.eval_images + IDENTIFICATION_POOL.min(report.train_images)
                    )
                })
                .unwrap_or_default();
            format!(
                "at split {split} the strongest attack ({}) rebuilds the input with SSIM {:.2}{id}",
                s.attack, s.ssim
            )
        })
        .unwrap_or_else(|| format!("split {split} was not audited"));
    let verdict = match report.recommended_split {
        Some(k) => format!("recommended split {k}"),
        None => format!(
            "no split passes the default policy (SSIM ≤ {}); for full privacy use --mode slalom",
            report.policy.max_ssim
        ),
    };
    format!("privacy (audit, {from}): {at}; {verdict}")
}

/// The split `origami` takes when none is given: the recorded audit's recommendation when it
/// covers this model and found one; else after the second pooling block (VGG-16: block 2,
/// split 4). That fallback shows the mechanism and is not a privacy claim: on the built-in
/// model the audit finds no private split (docs/AUDIT.md), and the demo prints that verdict.
pub fn default_split(model: &Model) -> usize {
    if let Some(k) = recorded()
        .ok()
        .and_then(|r| recommended(&r, model, "").ok())
    {
        return k;
    }
    let pools: Vec<usize> = model
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::MaxPool(_) | Op::AvgPool(_) | Op::GlobalAvgPool))
        .map(|(i, _)| i)
        .collect();
    let lin = model.linear_nodes().len();
    let before = |i: usize| model.nodes[..i].iter().filter(|n| n.op.is_linear()).count();
    match pools.get(1).or(pools.first()) {
        Some(&i) if before(i) > 0 && before(i) < lin => before(i),
        _ => (lin / 2).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict for the built-in model names the strongest attack by SSIM and, from the
    /// same recorded audit, the attack with the highest identification rate and its rate.
    #[test]
    fn verdict_reports_ssim_and_identification() {
        let model = origami_model::zoo::fashion();
        let report = recorded().unwrap();
        let layer = report.layers.iter().find(|l| l.split == 4).unwrap();
        let v = verdict(&model, 4, None);
        let s = layer.strongest();
        assert!(
            v.contains(&format!(
                "strongest attack ({}) rebuilds the input with SSIM {:.2}",
                s.attack, s.ssim
            )),
            "{v}"
        );
        let (rate, who) = layer
            .attacks
            .iter()
            .filter_map(|a| a.identification.map(|r| (r, a.attack.clone())))
            .max_by(|x, y| x.0.total_cmp(&y.0))
            .expect("the recorded audit measures identification");
        assert!(
            v.contains(&format!(
                "the {who} attack picks out {:.0} % of inputs",
                100.0 * rate
            )),
            "{v}"
        );
        assert!(verdict(&model, 17, None).contains("split 17 was not audited"));
    }
}
