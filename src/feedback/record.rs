//! What the milter does with a report at end of message: assess it, count
//! it, queue the action, and give the tag to add. The only I/O is the
//! queue file; the list managers are the worker's business. Counts go to
//! the session's observed events, for the recorder.

use super::Action;
use super::queue::{Job, Queue, QueueError};
use crate::config::Config;
use crate::record::Event;

/// Assesses one report and records it. `Ok(None)` without a `feedback:`
/// section; `Err` when its action could not be queued (the caller
/// tempfails: the provider sends the report again).
pub(crate) fn record(
    observed: &mut Vec<Event>,
    config: &Config,
    raw: &[u8],
    today: u64,
    queue_id: &str,
) -> Result<Option<String>, QueueError> {
    let Some(assessment) = super::assess(raw, config, today) else {
        return Ok(None);
    };
    let Some(settings) = config.feedback.as_ref() else {
        return Ok(None);
    };
    let a = &assessment.attribution;
    let list = a.list.as_deref().unwrap_or("-");
    let member = a.member.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let report_id = assessment.intake.report_id.clone().unwrap_or_default();
    tracing::info!(
        queue_id,
        list,
        member,
        member_from = a.member_from.as_str(),
        list_from = a.list_from,
        signature = a.signature.as_str(),
        provider = a.provider,
        feedback_type = assessment.intake.feedback_type,
        format = assessment.intake.format.as_str(),
        action = assessment.action.as_str(),
        why = assessment.why,
        report = report_id,
        "feedback report"
    );
    let count = |observed: &mut Vec<Event>, result: &'static str| {
        observed.push(Event::FeedbackReport {
            list: list.to_string(),
            provider: a.provider.clone(),
            result,
        });
    };
    // A complaint about mail we sent moves the rate (list and provider),
    // whatever is done to the member. Only our signature shows that we
    // sent it: a report that names the list in text alone could be
    // written by anyone, as often as they like. One signed address counts
    // once, however many reports carry it (see `mark`).
    if a.list_signed()
        && a.signature == super::Signature::Valid
        && settings.acts_on(&assessment.intake.feedback_type)
    {
        observed.push(Event::Complaint {
            list: list.to_string(),
            provider: a.provider.clone(),
            mark: mark(list, &assessment.intake.original),
        });
    }
    if matches!(
        assessment.action,
        Action::Unsubscribe | Action::Suspend | Action::NotifyOwner
    ) && !member.is_empty()
    {
        let job = Job {
            list: list.to_string(),
            member: member.clone(),
            action: assessment.action.as_str().to_string(),
            report_id: if report_id.is_empty() {
                format!("queue-id:{queue_id}")
            } else {
                report_id.clone()
            },
            feedback_type: assessment.intake.feedback_type.clone(),
            provider: a.provider.clone(),
            received: crate::unix_now(),
            attempts: 0,
            last_error: None,
        };
        // `decide` queues nothing for a report whose list was not in our
        // signature, so only reports about mail we sent can reach here.
        if let Err(e) = Queue::new(&settings.queue).push(&job) {
            count(observed, "queue_error");
            tracing::error!(queue_id, list, member, "cannot queue the complaint: {e}");
            return Err(e);
        }
    }
    count(observed, assessment.result());
    Ok(Some(assessment.tag()))
}

/// The complaint's mark: the complained-of copy's signed Return-Path (as
/// an address, so its spelling in the report does not matter), and
/// nothing the reporter wrote. Anyone holding one copy can send reports
/// naming any original Message-ID, from a mailbox at any provider; what
/// they cannot make is another signed address. So a per-member VERP copy
/// counts once per member and signing day, and a copy under the list's
/// shared address once per list and signing day: there the rate is a
/// floor (see listwarden.yaml(5), FEEDBACK).
fn mark(list: &str, original: &super::intake::Original) -> crate::rates::Mark {
    let rp = original.return_path.as_deref().unwrap_or("");
    let signed = match crate::address::parse_path(rp.trim()) {
        Ok(Some(addr)) => addr.key(),
        _ => rp.to_string(),
    };
    crate::rates::mark(list, &signed)
}
