# Tests for authz.rego: each case is an input and the decision it must get. They are run by
# tests/unit/test_policy_rego.py through the same compiled bundle the service uses. (Cases are
# data rather than `test_` rules with `with input as`: regopy 1.5's rego-cpp crashes on `with`
# over rules that read input through other rules.)
package strongroom.authz_test

import rego.v1

key(scopes) := {"type": "api_key", "id": "key_1", "merchant": "acct_a", "livemode": false, "scopes": scopes}

operator(role, mfa_age) := {
	"type": "operator",
	"id": "op_1",
	"merchant": "acct_a",
	"livemode": false,
	"role": role,
	"mfa_age_seconds": mfa_age,
}

publishable := {"type": "publishable_key", "id": "key_p", "merchant": "acct_a", "livemode": false}

ours := {"type": "payment_intent", "id": "pi_1", "merchant": "acct_a"}

theirs := {"type": "payment_intent", "id": "pi_2", "merchant": "acct_b"}

refund(amount) := {"type": "refund", "merchant": "acct_a", "amount": amount, "currency": "usd"}

ask(principal, action, resource) := {
	"principal": principal,
	"action": action,
	"resource": resource,
	"context": {"refund_step_up_amount": 10000},
}

cases := [
	# --- default deny ---------------------------------------------------------------------------
	{"name": "an unknown action is denied", "input": ask(key(null), "payment_intents.delete_all", ours), "allow": false, "denials": ["unknown_action"]},
	{"name": "an unknown principal is denied", "input": ask({"type": "robot", "merchant": "acct_a"}, "payment_intents.read", ours), "allow": false, "denials": ["principal"]},
	{"name": "an operator without a role is denied", "input": ask({"type": "operator", "merchant": "acct_a"}, "payment_intents.read", ours), "allow": false, "denials": ["role"]},
	{"name": "empty input is denied", "input": {}, "allow": false},
	{"name": "no principal is denied", "input": {"action": "payment_intents.read"}, "allow": false},
	# --- tenant isolation -----------------------------------------------------------------------
	{"name": "another merchant's object is denied to a full key", "input": ask(key(null), "payment_intents.read", theirs), "allow": false, "denials": ["tenant"]},
	{"name": "another merchant's refund is denied to an owner", "input": ask(operator("owner", 10), "refunds.create", {"type": "refund", "merchant": "acct_b", "amount": 1}), "allow": false, "denials": ["tenant"]},
	{"name": "the merchant's own object is allowed", "input": ask(key(null), "payment_intents.read", ours), "allow": true, "reason": "Allowed by full secret key."},
	# --- API keys and scopes --------------------------------------------------------------------
	{"name": "a full secret key may not manage keys", "input": ask(key(null), "api_keys.write", ours), "allow": false, "denials": ["not_for_keys"]},
	{"name": "a full secret key may not manage operators", "input": ask(key(null), "operators.write", ours), "allow": false, "denials": ["not_for_keys"]},
	{"name": "a restricted key may do what its scopes say", "input": ask(key(["payments:write"]), "payment_intents.create", ours), "allow": true, "reason": "Allowed by scope payments:write."},
	{"name": "a restricted key is denied without the scope", "input": ask(key(["payments:read"]), "payment_intents.create", ours), "allow": false, "denials": ["scope"]},
	{"name": "a restricted key with no scopes may do nothing", "input": ask(key([]), "payment_intents.read", ours), "allow": false, "denials": ["scope"]},
	{"name": "payments:write implies payments:read", "input": ask(key(["payments:write"]), "payment_intents.read", ours), "allow": true},
	{"name": "refunds:write implies refunds:read", "input": ask(key(["refunds:write"]), "refunds.read", ours), "allow": true},
	{"name": "refunds:read does not imply refunds:write", "input": ask(key(["refunds:read"]), "refunds.create", refund(100)), "allow": false, "denials": ["scope"]},
	{"name": "payments:write does not grant refunds", "input": ask(key(["payments:write"]), "refunds.create", refund(100)), "allow": false, "denials": ["scope"]},
	{"name": "refunds:write grants refunds", "input": ask(key(["refunds:write"]), "refunds.create", refund(100)), "allow": true},
	{"name": "customers:write grants customers", "input": ask(key(["customers:write"]), "customers.create", ours), "allow": true},
	{"name": "payments:write does not grant customers", "input": ask(key(["payments:write"]), "customers.create", ours), "allow": false, "denials": ["scope"]},
	{"name": "reports:read grants reports", "input": ask(key(["reports:read"]), "reports.read", ours), "allow": true},
	{"name": "payments:read does not grant reports", "input": ask(key(["payments:read"]), "reports.read", ours), "allow": false, "denials": ["scope"]},
	{"name": "webhooks:write grants endpoints", "input": ask(key(["webhooks:write"]), "webhook_endpoints.write", ours), "allow": true},
	{"name": "payments:write does not grant endpoints", "input": ask(key(["payments:write"]), "webhook_endpoints.write", ours), "allow": false, "denials": ["scope"]},
	{"name": "gateways:read does not grant gateway changes", "input": ask(key(["gateways:read"]), "gateway_accounts.write", ours), "allow": false, "denials": ["scope"]},
	{"name": "a key's refund above the threshold needs only its scope", "input": ask(key(["refunds:write"]), "refunds.create", refund(50000)), "allow": true},
	{"name": "audit:read grants the audit log", "input": ask(key(["audit:read"]), "audit.read", ours), "allow": true},
	{"name": "a publishable key may tokenize", "input": ask(publishable, "tokens.create", {}), "allow": true, "reason": "Allowed by publishable key."},
	{"name": "a publishable key may not read payments", "input": ask(publishable, "payment_intents.read", ours), "allow": false, "denials": ["publishable_key"]},
	{"name": "a secret key may not tokenize", "input": ask(key(null), "tokens.create", {}), "allow": false, "denials": ["not_for_keys"]},
	# --- operator roles -------------------------------------------------------------------------
	{"name": "an owner manages keys", "input": ask(operator("owner", null), "api_keys.write", ours), "allow": true, "reason": "Allowed by role owner."},
	{"name": "an admin may not manage keys", "input": ask(operator("admin", 10), "api_keys.write", ours), "allow": false, "denials": ["role"]},
	{"name": "an owner manages gateway credentials", "input": ask(operator("owner", null), "gateway_accounts.write", ours), "allow": true},
	{"name": "a developer may not manage gateway credentials", "input": ask(operator("developer", 10), "gateway_accounts.write", ours), "allow": false, "denials": ["role"]},
	{"name": "an admin may not manage operators", "input": ask(operator("admin", 10), "operators.write", ours), "allow": false, "denials": ["role"]},
	{"name": "a viewer reads payments", "input": ask(operator("viewer", null), "payment_intents.read", ours), "allow": true},
	{"name": "a viewer may not create payments", "input": ask(operator("viewer", 10), "payment_intents.create", ours), "allow": false, "denials": ["role"]},
	{"name": "support may not create payments", "input": ask(operator("support", 10), "payment_intents.create", ours), "allow": false, "denials": ["role"]},
	{"name": "a developer creates payments", "input": ask(operator("developer", null), "payment_intents.create", ours), "allow": true},
	{"name": "a viewer may not refund", "input": ask(operator("viewer", 10), "refunds.create", refund(100)), "allow": false, "denials": ["role"]},
	{"name": "support may refund up to the threshold", "input": ask(operator("support", null), "refunds.create", refund(10000)), "allow": true, "reason": "Allowed by role support."},
	{"name": "support may not see reports", "input": ask(operator("support", 10), "reports.read", ours), "allow": false, "denials": ["role"]},
	{"name": "finance exports reports", "input": ask(operator("finance", null), "reports.export", ours), "allow": true},
	{"name": "a developer may not export reports", "input": ask(operator("developer", 10), "reports.export", ours), "allow": false, "denials": ["role"]},
	{"name": "an admin reads the audit log", "input": ask(operator("admin", null), "audit.read", ours), "allow": true},
	{"name": "a developer may not read the audit log", "input": ask(operator("developer", 10), "audit.read", ours), "allow": false, "denials": ["role"]},
	# --- large refunds --------------------------------------------------------------------------
	{"name": "a large refund by finance with a second factor 300 s ago", "input": ask(operator("finance", 300), "refunds.create", refund(10001)), "allow": true},
	{"name": "a large refund by an owner with a fresh second factor", "input": ask(operator("owner", 0), "refunds.create", refund(10001)), "allow": true},
	{"name": "a large refund without a second factor", "input": ask(operator("finance", null), "refunds.create", refund(10001)), "allow": false, "denials": ["step_up"]},
	{"name": "a large refund with a second factor 301 s ago", "input": ask(operator("owner", 301), "refunds.create", refund(10001)), "allow": false, "denials": ["step_up"]},
	{"name": "a large refund by an admin, even with a second factor", "input": ask(operator("admin", 5), "refunds.create", refund(10001)), "allow": false, "denials": ["role"]},
	{"name": "a large refund by support without a second factor", "input": ask(operator("support", null), "refunds.create", refund(10001)), "allow": false, "denials": ["role", "step_up"]},
	{"name": "a refund at the threshold needs no second factor", "input": ask(operator("admin", null), "refunds.create", refund(10000)), "allow": true},
	# --- masking --------------------------------------------------------------------------------
	{"name": "support sees payments masked", "input": ask(operator("support", null), "payment_intents.read", ours), "allow": true, "mask": true},
	{"name": "support sees refunds masked", "input": ask(operator("support", null), "refunds.read", ours), "allow": true, "mask": true},
	{"name": "support sees customers masked", "input": ask(operator("support", null), "customers.read", ours), "allow": true, "mask": true},
	{"name": "an owner sees payments unmasked", "input": ask(operator("owner", null), "payment_intents.read", ours), "allow": true, "mask": false},
	{"name": "a viewer sees customers unmasked", "input": ask(operator("viewer", null), "customers.read", ours), "allow": true, "mask": false},
	{"name": "a key sees customers unmasked", "input": ask(key(null), "customers.read", ours), "allow": true, "mask": false},
]
