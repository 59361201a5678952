"""The web dashboard (`chaosbus dashboard`): experiments, Schedules, Workflows, Events and nodes,
updated live, read through NATS like the other services; writes through the direct triggers (local
mode) or the Kubernetes API with the user's own token (cluster mode), and the kill switch with the
operator's key. The pure parts: `auth` (tokens, sessions, CSRF), `views` (page models), `graph`
(workflow layout), `timeline`, `html` (rendering); the edges: `world` (what NATS says), `writes`,
`app` (aiohttp).
"""
