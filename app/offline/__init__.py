"""Offline evaluation for platform teams: `ostiary apply`, captured trust data, declarative tests.

Everything here drives the webhook's own code (app.admission.review.Reviewer, the policy translator,
a real OPA, app.notary's verifier); nothing re-decides on its own.
"""
