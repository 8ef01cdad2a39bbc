# Strongroom's authorization policy: who may do what to which object. Default deny.
#
# The service layer asks `data.strongroom.authz.decision` before every command and query, with
#   input.principal  {type: "api_key" | "publishable_key" | "operator", merchant,
#                     role (operators), scopes (restricted keys; null or absent for a full key),
#                     mfa_age_seconds (operators: since their last second factor; null if none)}
#   input.action     e.g. "refunds.create" (a key of data.json's `actions`)
#   input.resource   {type, id, merchant, amount, currency}; any of them may be missing
#   input.context    {refund_step_up_amount}: the merchant's settings the rules read
# and gets {allow, reason (for people), denials (codes: tenant, scope, role, step_up, …), mask}.
package strongroom.authz

import rego.v1

# Each action: the scope a restricted API key needs for it (none: keys may not do it at all)
# and the operator roles that may do it. The table is data.json beside this file (data is
# compiled into the bundle once; a table built by rules would be rebuilt on every decision).
actions := data.strongroom.actions

# Reads whose personal data (customer e-mail and name, card last four) a role sees masked.
masked_roles := {"support"}

masked_actions := {"payment_intents.read", "refunds.read", "customers.read"}

# Above the merchant's threshold, a refund by an operator needs one of these roles and a second
# factor within this many seconds.
large_refund_roles := {"finance", "owner"}

step_up_seconds := 300

principal := input.principal

# A full secret key has no scopes (null, or none given); a restricted key a list of them.
scopes := object.get(principal, "scopes", null)

default role_name := "(none)"

role_name := principal.role if is_string(principal.role)

action := actions[input.action]

# --- denials: any one refuses the request -------------------------------------------------------

denials contains {"code": "unknown_action", "message": sprintf("No policy covers '%s'.", [input.action])} if {
	not actions[input.action]
}

denials contains {"code": "tenant", "message": "The object belongs to another merchant."} if {
	input.resource.merchant
	input.resource.merchant != principal.merchant
}

denials contains {"code": "principal", "message": "Unknown kind of caller."} if {
	not principal.type in {"api_key", "publishable_key", "operator"}
}

denials contains {"code": "publishable_key", "message": "Publishable keys may only tokenize; use a secret key here."} if {
	principal.type == "publishable_key"
	action
	not action.publishable
}

denials contains {"code": "not_for_keys", "message": sprintf("%s is done in the console, not with an API key.", [input.action])} if {
	principal.type == "api_key"
	action
	not action.scope
}

denials contains {"code": "scope", "message": sprintf("This restricted key lacks the '%s' scope.", [action.scope])} if {
	principal.type == "api_key"
	scopes != null
	not has_scope(action.scope)
}

denials contains {"code": "role", "message": sprintf("The %s role may not do %s.", [role_name, input.action])} if {
	principal.type == "operator"
	not principal.role in action.roles
}

denials contains {"code": "role", "message": "A refund above the merchant's threshold needs the finance or owner role."} if {
	large_operator_refund
	not principal.role in large_refund_roles
}

denials contains {"code": "step_up", "message": "A refund above the merchant's threshold needs a second factor within the last 5 minutes."} if {
	large_operator_refund
	not recent_second_factor
}

# --- helpers ------------------------------------------------------------------------------------

has_scope(scope) if scope in scopes

# Write implies read, as with Stripe's restricted keys.
has_scope(scope) if {
	[area, "read"] = split(scope, ":")
	sprintf("%s:write", [area]) in scopes
}

large_operator_refund if {
	input.action == "refunds.create"
	principal.type == "operator"
	input.resource.amount > input.context.refund_step_up_amount
}

recent_second_factor if {
	is_number(principal.mfa_age_seconds)
	principal.mfa_age_seconds <= step_up_seconds
}

grant := sprintf("role %s", [principal.role]) if principal.type == "operator"

grant := "full secret key" if {
	principal.type == "api_key"
	scopes == null
}

grant := sprintf("scope %s", [action.scope]) if {
	principal.type == "api_key"
	scopes != null
}

grant := "publishable key" if principal.type == "publishable_key"

# --- the decision -------------------------------------------------------------------------------

default allow := false

# Allowed only when nothing refuses and some rule grants: an unforeseen input stays denied.
allow if {
	count(denials) == 0
	grant
}

default mask := false

mask if {
	principal.type == "operator"
	principal.role in masked_roles
	input.action in masked_actions
}

reason := concat(" ", sort([d.message | some d in denials])) if count(denials) > 0

reason := sprintf("Allowed by %s.", [grant]) if {
	count(denials) == 0
	grant
}

default reason := "No rule allows this."

decision := {
	"allow": allow,
	"reason": reason,
	"denials": sort([d.code | some d in denials]),
	"mask": mask,
}
