// Which analytics rule a topic takes, as the server chooses it (GET rules): the first rule
// one of whose selectors matches it (a name, `prefix.*` or `*`), else the default rule.

/** The topic's rule, or null while the rules are not known. */
export function ruleFor(rules, topic) {
  if (!rules) return null;
  const rule = rules.rules.find((r) => r.topics.some((selector) => selects(selector, topic)));
  return rule || rules.default;
}

/** Whether pushsvc derives `topic` itself (a `[[derive]]` rule's): its events carry no tags,
 *  so a rule's distinct counts and top values (of the `prefix.*` rule it falls under) stay
 *  at nothing there. False while the rules are not known. */
export function isDerived(rules, topic) {
  return Boolean(rules && (rules.derive || []).some((rule) => rule.topic === topic));
}

/** The `[[session]]` rule that makes `topic` of its source topics' events, or null (also
 *  while the rules are not known). */
export function sessionRuleOf(rules, topic) {
  return (rules && (rules.session || []).find((rule) => rule.topic === topic)) || null;
}

function selects(selector, topic) {
  if (selector === "*") return true;
  // `sensors.*` matches the names that start with `sensors.`, not `sensors` itself.
  if (selector.endsWith(".*")) return topic.startsWith(selector.slice(0, -1));
  return selector === topic;
}
