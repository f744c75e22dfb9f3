"""Jira Cloud: projects, and the issues a bounded JQL selects."""
