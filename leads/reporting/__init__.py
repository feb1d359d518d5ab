"""Reporting: result rows, leaderboards, published numbers, figures."""
