"""The report's words in each language: headings and labels, values, event names, and how
moments and durations are written (``Words``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Language = Literal["en", "fr"]
LANGUAGES: tuple[Language, ...] = ("en", "fr")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Post-incident report",
        "summary": "Summary",
        "incident": "Incident",
        "ticket": "Ticket",
        "incident_title": "Title",
        "severity": "Severity",
        "outcome": "Outcome",
        "runbooks": "Runbooks",
        "runbook": "Runbook",
        "version": "Version",
        "requested_by": "Requested by",
        "via": "From",
        "started": "Started",
        "finished": "Finished",
        "status": "Status",
        "prefect": "Prefect state",
        "prefect_unavailable": "unavailable (Prefect could not be read)",
        "time_to_contain": "Time to contain",
        "not_contained": "not contained (no containment step finished)",
        "generated": "Generated",
        "steps": "Steps",
        "step": "Step",
        "kind": "Kind",
        "phase": "Phase",
        "duration": "Duration",
        "attempts": "Attempts",
        "error": "Error",
        "approvals": "Approvals",
        "requested": "Requested",
        "decided": "Decided",
        "waited": "Waited",
        "decided_by": "Decided by",
        "quorum": "Quorum",
        "group": "Approvers",
        "no_approvals": "No approval gate in this incident.",
        "refused": "Refused decisions",
        "who": "Who",
        "channel": "Channel",
        "reason": "Reason",
        "decision": "Decision",
        "manual_tasks": "Manual tasks",
        "done_by": "Done by",
        "ticked": "Ticked",
        "not_ticked": "Not ticked",
        "no_manual": "No manual task in this incident.",
        "communications": "Communications sent",
        "messages": "Messages",
        "no_communications": "No message sent by Tocsin.",
        "clocks": "Regulatory clocks",
        "clock": "Obligation",
        "deadline": "Deadline",
        "stopped": "Met at",
        "source": "Source",
        "no_clocks": "No regulatory clock in these runbooks.",
        "timeline": "Timeline",
        "time": "Time",
        "event": "Event",
        "detail": "Detail",
        "audit": "Audit trail",
        "records": "Records",
        "checkpoints": "Signed checkpoints",
        "head": "Chain head",
        "verification": "Verification",
        "intact": "intact",
        "not_intact": "NOT intact",
        "not_checked": "signatures not checked (no public key)",
        "keys": "Signing keys",
        "anchors": "Published heads (anchors)",
        "verify_with": "Verify with",
        "lessons": "Lessons learned",
        "lessons_hint": "To be written by the incident lead: what worked, what did not, what changes.",
        "routine_left_out": "{count} routine step events (started, succeeded, retried, message sent) are left out of the printed timeline: they are in the Steps table, and every event is in the HTML and JSON reports.",
        "annex": "Annex {number}: {title}",
        "annex_intro": "The document step {step} ({action}) wrote, as its output {output} "
        "is kept in the audit trail.",
        "none": "none",
        "unknown": "unknown",
    },
    "fr": {
        "title": "Rapport post-incident",
        "summary": "Synthèse",
        "incident": "Incident",
        "ticket": "Ticket",
        "incident_title": "Intitulé",
        "severity": "Gravité",
        "outcome": "Issue",
        "runbooks": "Procédures",
        "runbook": "Procédure",
        "version": "Version",
        "requested_by": "Demandé par",
        "via": "Depuis",
        "started": "Début",
        "finished": "Fin",
        "status": "Statut",
        "prefect": "État Prefect",
        "prefect_unavailable": "indisponible (Prefect n'a pas pu être lu)",
        "time_to_contain": "Délai de confinement",
        "not_contained": "non confiné (aucune étape de confinement terminée)",
        "generated": "Généré le",
        "steps": "Étapes",
        "step": "Étape",
        "kind": "Type",
        "phase": "Phase",
        "duration": "Durée",
        "attempts": "Tentatives",
        "error": "Erreur",
        "approvals": "Approbations",
        "requested": "Demandée",
        "decided": "Décidée",
        "waited": "Attente",
        "decided_by": "Décidée par",
        "quorum": "Quorum",
        "group": "Approbateurs",
        "no_approvals": "Aucune approbation dans cet incident.",
        "refused": "Décisions refusées",
        "who": "Qui",
        "channel": "Canal",
        "reason": "Motif",
        "decision": "Décision",
        "manual_tasks": "Tâches manuelles",
        "done_by": "Faite par",
        "ticked": "Cochés",
        "not_ticked": "Non cochés",
        "no_manual": "Aucune tâche manuelle dans cet incident.",
        "communications": "Communications envoyées",
        "messages": "Messages",
        "no_communications": "Aucun message envoyé par Tocsin.",
        "clocks": "Délais réglementaires",
        "clock": "Obligation",
        "deadline": "Échéance",
        "stopped": "Respectée le",
        "source": "Source",
        "no_clocks": "Aucun délai réglementaire dans ces procédures.",
        "timeline": "Chronologie",
        "time": "Heure",
        "event": "Événement",
        "detail": "Détail",
        "audit": "Journal d'audit",
        "records": "Enregistrements",
        "checkpoints": "Points de contrôle signés",
        "head": "Tête de chaîne",
        "verification": "Vérification",
        "intact": "intact",
        "not_intact": "NON intact",
        "not_checked": "signatures non vérifiées (pas de clé publique)",
        "keys": "Clés de signature",
        "anchors": "Têtes publiées (ancres)",
        "verify_with": "Vérifier avec",
        "lessons": "Retour d'expérience",
        "lessons_hint": "À rédiger par le responsable de l'incident : ce qui a marché, ce qui n'a pas marché, ce qui change.",
        "routine_left_out": "{count} événements courants (étape démarrée, réussie, nouvelle tentative, message envoyé) ne sont pas repris dans la chronologie imprimée : ils figurent dans le tableau des étapes, et tous les événements sont dans les rapports HTML et JSON.",
        "annex": "Annexe {number} : {title}",
        "annex_intro": "Le document rédigé par l'étape {step} ({action}), tel que le journal "
        "d'audit conserve sa sortie {output}.",
        "none": "aucun",
        "unknown": "inconnu",
    },
}

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "succeeded": "succeeded",
        "failed": "failed",
        "skipped": "skipped",
        "undone": "undone",
        "approved": "approved",
        "rejected": "rejected",
        "done": "done",
        "timed_out": "timed out",
        "waiting": "waiting",
        "running": "running",
        "met": "met",
        "missed": "MISSED",
        "overdue": "OVERDUE",
        "not_required": "not required",
        "approve": "approve",
        "reject": "reject",
        "action": "action",
        "approval": "approval",
        "manual": "manual task",
        "in_doubt": "check after crash",
        "contain": "contain",
        "eradicate": "eradicate",
        "recover": "recover",
        "communicate": "communicate",
        "notify": "notify",
        "low": "low",
        "medium": "medium",
        "high": "high",
        "critical": "critical",
        "unknown": "unknown",
    },
    "fr": {
        "succeeded": "réussie",
        "failed": "échouée",
        "skipped": "ignorée",
        "undone": "annulée",
        "approved": "approuvée",
        "rejected": "rejetée",
        "done": "faite",
        "timed_out": "expirée",
        "waiting": "en attente",
        "running": "en cours",
        "met": "respecté",
        "missed": "DÉPASSÉ",
        "overdue": "EN RETARD",
        "not_required": "non requis",
        "approve": "approuver",
        "reject": "rejeter",
        "action": "action",
        "approval": "approbation",
        "manual": "tâche manuelle",
        "in_doubt": "vérification après panne",
        "contain": "confiner",
        "eradicate": "éradiquer",
        "recover": "rétablir",
        "communicate": "communiquer",
        "notify": "notifier",
        "low": "faible",
        "medium": "moyenne",
        "high": "élevée",
        "critical": "critique",
        "unknown": "inconnue",
    },
}

EVENT_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "run.started": "run started",
        "run.resumed": "run resumed",
        "run.finished": "run finished",
        "step.started": "step started",
        "step.succeeded": "step succeeded",
        "step.failed": "step failed",
        "step.retried": "step retried",
        "step.attempt_failed": "attempt failed",
        "step.skipped": "step skipped",
        "step.undone": "step undone",
        "step.undo_failed": "undo failed",
        "step.approved": "gate approved",
        "step.rejected": "gate rejected",
        "step.done": "task done",
        "step.timed_out": "timed out",
        "approval.requested": "approval requested",
        "manual.requested": "manual task requested",
        "in_doubt.requested": "check requested",
        "approval.escalated": "approval escalated",
        "approval.timed_out": "approval timed out",
        "decision.received": "decision received",
        "decision.applied": "decision applied",
        "decision.refused": "decision refused",
        "message.sent": "message sent",
        "clock.started": "clock started",
        "clock.stopped": "clock stopped",
        "audit.checkpoint_anchored": "head published",
        "audit.anchor_failed": "head not published",
        "approval.reminded": "approvers reminded",
        "manual.reminded": "reminder sent",
        "announce.failed": "notification failed",
        "gateway.request_refused": "request refused (not authentic)",
        "run.request_refused": "run request refused",
    },
    "fr": {
        "run.started": "exécution démarrée",
        "run.resumed": "exécution reprise",
        "run.finished": "exécution terminée",
        "step.started": "étape démarrée",
        "step.succeeded": "étape réussie",
        "step.failed": "étape échouée",
        "step.retried": "nouvelle tentative",
        "step.attempt_failed": "tentative échouée",
        "step.skipped": "étape ignorée",
        "step.undone": "étape annulée",
        "step.undo_failed": "annulation échouée",
        "step.approved": "approbation accordée",
        "step.rejected": "approbation rejetée",
        "step.done": "tâche faite",
        "step.timed_out": "délai expiré",
        "approval.requested": "approbation demandée",
        "manual.requested": "tâche manuelle demandée",
        "in_doubt.requested": "vérification demandée",
        "approval.escalated": "approbation escaladée",
        "approval.timed_out": "approbation expirée",
        "decision.received": "décision reçue",
        "decision.applied": "décision appliquée",
        "decision.refused": "décision refusée",
        "message.sent": "message envoyé",
        "clock.started": "délai démarré",
        "clock.stopped": "délai arrêté",
        "audit.checkpoint_anchored": "tête publiée",
        "audit.anchor_failed": "tête non publiée",
        "approval.reminded": "rappel aux approbateurs",
        "manual.reminded": "rappel envoyé",
        "announce.failed": "notification échouée",
        "gateway.request_refused": "requête refusée (non authentique)",
        "run.request_refused": "demande d'exécution refusée",
    },
}


@dataclass
class Words:
    """The report's words in ``lang``: ``words(key)`` a message, and values, events, times."""

    lang: Language

    def __call__(self, key: str) -> str:
        return MESSAGES[self.lang][key]

    def word(self, value: str | None) -> str:
        if value is None:
            return "—"
        return WORDS[self.lang].get(value, value)

    def event(self, kind: str) -> str:
        return EVENT_NAMES[self.lang].get(kind, kind)

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        pattern = "%d/%m/%Y %H:%M:%S UTC" if self.lang == "fr" else "%Y-%m-%d %H:%M:%S UTC"
        return moment.strftime(pattern)

    def clock_time(self, moment: datetime) -> str:
        return moment.strftime("%H:%M:%S")

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        if seconds < 1:
            return "< 1 s"
        total = int(round(seconds))
        days, rest = divmod(total, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        day = "j" if self.lang == "fr" else "d"
        if days:
            return f"{days} {day} {hours} h"
        if hours:
            return f"{hours} h {minutes} min"
        if minutes:
            return f"{minutes} min {secs} s"
        return f"{secs} s"
