"""Deciding from a fitted law: options and their costs, the frontier, the expected-utility
decision with P(best) and regret, next-run proposals, and their reports and plots."""
