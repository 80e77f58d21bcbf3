"""Business logic as plain functions called by the API and the pages; they stage changes, views commit."""
