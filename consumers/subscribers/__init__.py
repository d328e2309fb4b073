"""Alert subscribers: the terminal tail (`streamrisk alerts`), the webhook forwarder
(`streamrisk webhook`) and their shared row model and filters. The live dashboard is in
`consumers.dashboard`."""
