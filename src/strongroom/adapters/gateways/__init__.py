"""Payment gateways behind one port: the sandbox now, Stripe and Braintree later."""
