"""Helpers of the notification service's tests: a PKI like the launcher's, the service as a
real process, a fake rental event feed, tokens, clients, polling with a deadline."""
