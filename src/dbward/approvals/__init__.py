"""Approval workflows: access, SQL, unmask and export requests, approved along multi-stage lines."""
