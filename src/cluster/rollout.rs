//! When a rollout is done, read from the live object's status (pure): a
//! Deployment whose controller has seen the newest generation, with every
//! replica updated and available and no replica of the old template left;
//! a Job that completed.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Done,
    /// Still rolling out: what it waits for.
    Waiting(String),
    /// Will not finish by itself: why.
    Failed(String),
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn count(object: &Value, field: &str) -> i64 {
    object["status"][field].as_i64().unwrap_or(0)
}

/// The state of a Deployment's rollout, as `kubectl rollout status`
/// judges it.
pub fn deployment(object: &Value) -> Health {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = object["status"]["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Health::Waiting(format!(
            "the controller has not seen generation {generation} yet (observed {observed})"
        ));
    }
    if let Some(progressing) = condition(object, "Progressing")
        && progressing["reason"] == "ProgressDeadlineExceeded"
    {
        return Health::Failed(format!(
            "progress deadline exceeded: {}",
            progressing["message"].as_str().unwrap_or("no message")
        ));
    }
    let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = count(object, "updatedReplicas");
    let total = count(object, "replicas");
    let available = count(object, "availableReplicas");
    if updated < wanted {
        return Health::Waiting(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Health::Waiting(format!("{} old replicas still running", total - updated));
    }
    if available < updated {
        return Health::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    match condition(object, "Available") {
        Some(available) if available["status"] != "True" => Health::Waiting(format!(
            "not available: {}",
            available["reason"].as_str().unwrap_or("no reason")
        )),
        _ => Health::Done,
    }
}

/// The state of a Job: complete, failed (with the controller's reason),
/// or running.
pub fn job(object: &Value) -> Health {
    if condition(object, "Complete").is_some_and(|c| c["status"] == "True") {
        return Health::Done;
    }
    if let Some(failed) = condition(object, "Failed").filter(|c| c["status"] == "True") {
        return Health::Failed(format!(
            "{}: {}",
            failed["reason"].as_str().unwrap_or("Failed"),
            failed["message"].as_str().unwrap_or("no message")
        ));
    }
    Health::Waiting(format!(
        "{} active, {} failed attempts",
        count(object, "active"),
        count(object, "failed")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_with(generation: i64, status: Value) -> Value {
        json!({ "metadata": { "generation": generation }, "spec": { "replicas": 2 }, "status": status })
    }

    #[test]
    fn a_deployment_is_done_only_when_every_replica_of_the_new_generation_is_available() {
        let done = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
            "conditions": [{ "type": "Available", "status": "True" }] });
        assert_eq!(deployment(&deployment_with(3, done.clone())), Health::Done);
        assert!(matches!(
            deployment(&deployment_with(4, done)),
            Health::Waiting(_)
        ));
        let old_left = json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 });
        assert!(
            matches!(deployment(&deployment_with(3, old_left)), Health::Waiting(w) if w.contains("old"))
        );
        let unavailable = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 0 });
        assert!(matches!(
            deployment(&deployment_with(3, unavailable)),
            Health::Waiting(_)
        ));
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed() {
        let stuck = json!({ "observedGeneration": 1, "conditions": [
            { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out" }] });
        assert!(
            matches!(deployment(&deployment_with(1, stuck)), Health::Failed(m) if m.contains("timed out"))
        );
    }

    #[test]
    fn a_job_completes_or_fails_with_its_reason() {
        let complete =
            json!({ "status": { "conditions": [{ "type": "Complete", "status": "True" }] } });
        assert_eq!(job(&complete), Health::Done);
        let failed = json!({ "status": { "conditions": [
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff" }] } });
        assert!(matches!(job(&failed), Health::Failed(m) if m.starts_with("BackoffLimitExceeded")));
        assert!(matches!(
            job(&json!({ "status": { "active": 1 } })),
            Health::Waiting(_)
        ));
    }
}
