"""Clients that attack a real `pushsvc serve` while a legitimate producer and subscriber use
it: what each attack may cost the server, and what the legitimate clients keep."""
