// Evaluates the IAM policies of infra/mayfly.yaml and infra/payer.yaml offline, with
// @cloud-copilot/iam-simulate (a test tool only: installed by `scripts/emulator.sh install`
// into .mayfly/iam-check, never shipped). moto evaluates no Condition and checks EC2 and
// DynamoDB against "*" only; what it cannot prove is proven here, on the policies as the
// templates write them (parameters resolved as CloudFormation would).
//
// Usage: node tests/iam/check.cjs conditions|operations
//   conditions  the walls: each request is decided as expected, and each check flips when
//               the statement or condition that provides it is removed from the template
//   operations  every operation of tests/iam/operations.json is allowed by its role's
//               policies, and denied once its action is removed from that role
// Prints one JSON line per check ({check, ok, detail}); exits 1 when any fails.
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');
const { runSimulation } = require('@cloud-copilot/iam-simulate');

const REPO = path.resolve(__dirname, '..', '..');
const ACCOUNT = '123456789012';
const REGION = 'us-east-1';
const NAME = 'prod';

// --- Templates: YAML with CloudFormation's short-form tags, read as their long forms.
const FUNCTIONS = {
  '!Ref': 'Ref',
  '!Sub': 'Fn::Sub',
  '!GetAtt': 'Fn::GetAtt',
  '!If': 'Fn::If',
  '!Join': 'Fn::Join',
  '!Split': 'Fn::Split',
  '!Select': 'Fn::Select',
  '!Not': 'Fn::Not',
  '!Equals': 'Fn::Equals',
  '!And': 'Fn::And',
  '!Or': 'Fn::Or',
  '!Condition': 'Condition',
  '!ImportValue': 'Fn::ImportValue',
};
const customTags = Object.entries(FUNCTIONS).flatMap(([tag, fn]) => [
  { tag, resolve: (s) => ({ [fn]: fn === 'Fn::GetAtt' ? s.split('.') : s }) },
  { tag, collection: 'seq', resolve: (seq) => ({ [fn]: seq.toJSON() }) },
  { tag, collection: 'map', resolve: (map) => ({ [fn]: map.toJSON() }) },
]);

function readTemplate(file) {
  const text = fs.readFileSync(path.join(REPO, file), 'utf8');
  return YAML.parse(text, { customTags, uniqueKeys: false });
}

// --- Resolution of intrinsic functions, as CloudFormation would for a stack of `params`.
const NO_VALUE = Symbol('AWS::NoValue');

function resolver(template, stack, overrides) {
  const params = {};
  for (const [k, p] of Object.entries(template.Parameters || {})) {
    const raw = k in overrides ? overrides[k] : p.Default;
    if (raw === undefined) throw new Error(`parameter ${k} has no value`);
    params[k] = p.Type === 'CommaDelimitedList' ? String(raw).split(',') : String(raw);
  }
  const pseudo = {
    'AWS::AccountId': ACCOUNT,
    'AWS::Region': REGION,
    'AWS::Partition': 'aws',
    'AWS::StackName': stack,
    'AWS::NoValue': NO_VALUE,
  };
  const conditions = {};
  const condition = (name) => {
    if (!(name in conditions)) conditions[name] = Boolean(value(template.Conditions[name]));
    return conditions[name];
  };
  const resources = template.Resources;
  const physicalName = (id) => {
    const r = resources[id];
    const p = r.Properties || {};
    const named = {
      'AWS::IAM::Role': 'RoleName',
      'AWS::IAM::InstanceProfile': 'InstanceProfileName',
      'AWS::SQS::Queue': 'QueueName',
      'AWS::DynamoDB::Table': 'TableName',
      'AWS::Lambda::Function': 'FunctionName',
    }[r.Type];
    if (named && p[named] !== undefined) return value(p[named]);
    return `${stack}-${id}-GENERATED`;
  };
  const attribute = (id, attr) => {
    const r = resources[id];
    if (!r) throw new Error(`GetAtt of unknown resource ${id}`);
    const name = physicalName(id);
    const iamPath = () => (r.Properties.Path ? value(r.Properties.Path) : '/');
    const arns = {
      'AWS::IAM::Role': `arn:aws:iam::${ACCOUNT}:role${iamPath()}${name}`,
      'AWS::IAM::InstanceProfile': `arn:aws:iam::${ACCOUNT}:instance-profile${iamPath()}${name}`,
      'AWS::SQS::Queue': `arn:aws:sqs:${REGION}:${ACCOUNT}:${name}`,
      'AWS::DynamoDB::Table': `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${name}`,
      'AWS::Lambda::Function': `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${name}`,
    };
    if (attr === 'Arn' && arns[r.Type]) return arns[r.Type];
    if (attr === 'QueueName') return name;
    throw new Error(`GetAtt ${id}.${attr} is not modelled`);
  };
  const ref = (name) => {
    if (name in pseudo) return pseudo[name];
    if (name in params) return params[name];
    if (name in resources) {
      const r = resources[name];
      if (r.Type === 'AWS::SQS::Queue') {
        return `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${physicalName(name)}`;
      }
      return physicalName(name);
    }
    throw new Error(`Ref to unknown ${name}`);
  };
  const sub = (text, vars) =>
    text.replace(/\$\{([^}!]+)\}/g, (_, key) => {
      if (vars && key in vars) return String(value(vars[key]));
      if (key.includes('.') && !key.startsWith('AWS::')) {
        const [id, attr] = key.split('.');
        return attribute(id, attr);
      }
      return String(ref(key));
    });
  function value(node) {
    if (Array.isArray(node)) {
      return node.map(value).filter((v) => v !== NO_VALUE);
    }
    if (node === null || typeof node !== 'object') return node;
    const keys = Object.keys(node);
    if (keys.length === 1) {
      const [k] = keys;
      const a = node[k];
      switch (k) {
        case 'Ref':
          return ref(a);
        case 'Fn::Sub':
          return Array.isArray(a) ? sub(a[0], a[1]) : sub(a);
        case 'Fn::GetAtt':
          return attribute(a[0], a[1]);
        case 'Fn::If':
          return condition(a[0]) ? value(a[1]) : value(a[2]);
        case 'Fn::Join':
          return value(a[1]).flat().join(a[0]);
        case 'Fn::Split':
          return String(value(a[1])).split(a[0]);
        case 'Fn::Select':
          return value(a[1])[Number(value(a[0]))];
        case 'Fn::Not':
          return !value(a[0]);
        case 'Fn::Equals':
          return String(value(a[0])) === String(value(a[1]));
        case 'Fn::And':
          return a.every((c) => value(c));
        case 'Fn::Or':
          return a.some((c) => value(c));
        case 'Condition':
          return condition(a);
        default:
          break;
      }
    }
    const out = {};
    for (const [k, v] of Object.entries(node)) {
      const r = value(v);
      if (r !== NO_VALUE) out[k] = r;
    }
    return out;
  }
  return { value, condition, attribute };
}

// The identity policies of role `roleId`: its inline policies and every AWS::IAM::Policy
// attached to it whose condition holds.
function rolePolicies(template, stack, overrides, roleId) {
  const { value, condition, attribute } = resolver(template, stack, overrides);
  const role = template.Resources[roleId];
  const out = (role.Properties.Policies || []).map((p) => ({
    name: p.PolicyName,
    policy: value(p.PolicyDocument),
  }));
  for (const [id, r] of Object.entries(template.Resources)) {
    if (r.Type !== 'AWS::IAM::Policy') continue;
    if (r.Condition && !condition(r.Condition)) continue;
    const roles = r.Properties.Roles || [];
    if (!roles.some((x) => x && x.Ref === roleId)) continue;
    out.push({ name: r.Properties.PolicyName || id, policy: value(r.Properties.PolicyDocument) });
  }
  return { policies: out, arn: attribute(roleId, 'Arn') };
}

// --- Template mutations: the statement with `sid` in any policy of the template.
function statements(template, sid) {
  const found = [];
  const visit = (doc) => {
    for (const s of (doc && doc.Statement) || []) if (s.Sid === sid) found.push(s);
  };
  for (const r of Object.values(template.Resources)) {
    if (r.Type === 'AWS::IAM::Role') (r.Properties.Policies || []).forEach((p) => visit(p.PolicyDocument));
    if (r.Type === 'AWS::IAM::Policy') visit(r.Properties.PolicyDocument);
  }
  if (!found.length) throw new Error(`no statement ${sid} in the template`);
  return found;
}
const mutations = {
  removeCondition: (sid, key) => (t) => {
    for (const s of statements(t, sid)) {
      if (key) delete s.Condition[key];
      else delete s.Condition;
    }
  },
  removeStatement: (sid) => (t) => {
    statements(t, sid); // it must exist
    for (const r of Object.values(t.Resources)) {
      const docs = [];
      if (r.Type === 'AWS::IAM::Role') (r.Properties.Policies || []).forEach((p) => docs.push(p.PolicyDocument));
      if (r.Type === 'AWS::IAM::Policy') docs.push(r.Properties.PolicyDocument);
      for (const d of docs) d.Statement = d.Statement.filter((s) => s.Sid !== sid);
    }
  },
  anyResource: (sid) => (t) => {
    for (const s of statements(t, sid)) s.Resource = '*';
  },
  // `action` removed from every statement of role `roleId`'s policies.
  removeAction: (roleId, action) => (t) => {
    const docs = (t.Resources[roleId].Properties.Policies || []).map((p) => p.PolicyDocument);
    for (const r of Object.values(t.Resources)) {
      if (r.Type === 'AWS::IAM::Policy' && (r.Properties.Roles || []).some((x) => x && x.Ref === roleId)) {
        docs.push(r.Properties.PolicyDocument);
      }
    }
    for (const d of docs) {
      for (const s of d.Statement) {
        const actions = [].concat(s.Action);
        s.Action = actions.filter((a) => a !== action);
      }
      d.Statement = d.Statement.filter((s) => s.Action.length);
    }
  },
};

async function decide(policies, principal, req) {
  const res = await runSimulation(
    {
      identityPolicies: policies,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: undefined,
      request: {
        action: req.action,
        principal,
        resource: { accountId: req.account || ACCOUNT, resource: req.resource },
        contextVariables: req.context || {},
      },
    },
    {},
  );
  if (res.resultType === 'error') {
    throw new Error(`${req.action} on ${req.resource}: ${JSON.stringify(res.errors)}`);
  }
  return res.overallResult;
}

// One request against one role of one template (mutated or not): its decision.
async function evaluate({ file, stack, params, role }, req, mutate) {
  const template = readTemplate(file);
  if (mutate) mutate(template);
  const { policies, arn } = rolePolicies(template, stack, params || {}, role);
  // The caller is a session of the role (the Lambda function's, or an instance's).
  const roleName = arn.split('/').pop();
  return decide(policies, `arn:aws:sts::${ACCOUNT}:assumed-role/${roleName}/session`, req);
}

module.exports = { readTemplate, rolePolicies, evaluate, mutations, NAME, ACCOUNT, REGION };

// --- The checks.
const arn = {
  instance: (id) => `arn:aws:ec2:${REGION}:${ACCOUNT}:instance/${id}`,
  image: (id) => `arn:aws:ec2:${REGION}::image/${id}`,
  subnet: (id) => `arn:aws:ec2:${REGION}:${ACCOUNT}:subnet/${id}`,
  role: (p) => `arn:aws:iam::${ACCOUNT}:role/${p}`,
};
const DEPLOYMENT = { file: 'infra/mayfly.yaml', stack: NAME, params: { DeploymentName: NAME }, role: 'SchedulerRole' };
const IN_VPC = { ...DEPLOYMENT, params: { DeploymentName: NAME, VpcId: 'vpc-0aaaaaaaaaaaaaaa1' } };
const PAYER_A = {
  file: 'infra/payer.yaml',
  stack: `${NAME}-payer-payer-a`,
  params: {
    DeploymentName: NAME,
    PayerId: 'payer-a',
    InputArns: 'arn:aws:s3:::example-shared-drop/payer-a',
    SecretArns: `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:mayfly/payer-a-AbCdEf`,
  },
  role: 'PayerRole',
};
const own = { 'ec2:ResourceTag/mayfly:cluster': NAME };

// (name, template, request, expected decision, [mutation that must flip it, ...])
const CONDITIONS = [
  ['DeleteTags of an own instance without tag keys is denied', DEPLOYMENT,
    { action: 'ec2:DeleteTags', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: own },
    'ImplicitlyDenied', [mutations.removeCondition('MarkOwnOrphans', 'Null')]],
  ['DeleteTags of mayfly:protect is denied', DEPLOYMENT,
    { action: 'ec2:DeleteTags', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { ...own, 'aws:TagKeys': ['mayfly:protect'] } },
    'ImplicitlyDenied', [mutations.removeCondition('MarkOwnOrphans', 'ForAllValues:StringEquals')]],
  ['DeleteTags of mayfly:cluster and the orphan mark together is denied', DEPLOYMENT,
    { action: 'ec2:DeleteTags', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { ...own, 'aws:TagKeys': ['mayfly:orphaned-at', 'mayfly:cluster'] } },
    'ImplicitlyDenied', [mutations.removeCondition('MarkOwnOrphans', 'ForAllValues:StringEquals')]],
  ['the orphan mark on an own instance is allowed', DEPLOYMENT,
    { action: 'ec2:CreateTags', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { ...own, 'aws:TagKeys': ['mayfly:orphaned-at'] } },
    'Allowed', []],
  ['the orphan mark on another deployment\'s instance is denied', DEPLOYMENT,
    { action: 'ec2:CreateTags', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { 'ec2:ResourceTag/mayfly:cluster': 'staging', 'aws:TagKeys': ['mayfly:orphaned-at'] } },
    'ImplicitlyDenied', [mutations.removeCondition('MarkOwnOrphans', 'StringEquals')]],
  ['RunInstances with another owner\'s image is denied', DEPLOYMENT,
    { action: 'ec2:RunInstances', resource: arn.image('ami-0aaaaaaaaaaaaaaa1'), context: { 'ec2:Owner': '999988887777' } },
    'ImplicitlyDenied', [mutations.removeCondition('RunInstancesFromAllowedImages')]],
  ['RunInstances with an Amazon image is allowed', DEPLOYMENT,
    { action: 'ec2:RunInstances', resource: arn.image('ami-0aaaaaaaaaaaaaaa1'), context: { 'ec2:Owner': 'amazon' } },
    'Allowed', []],
  ['RunInstances with the account\'s own image is allowed', DEPLOYMENT,
    { action: 'ec2:RunInstances', resource: arn.image('ami-0aaaaaaaaaaaaaaa1'), context: { 'ec2:Owner': ACCOUNT } },
    'Allowed', []],
  ['RunInstances into a subnet of another VPC is denied', IN_VPC,
    { action: 'ec2:RunInstances', resource: arn.subnet('subnet-0aaaaaaaaaaaaaaa1'), context: { 'ec2:Vpc': `arn:aws:ec2:${REGION}:${ACCOUNT}:vpc/vpc-0bbbbbbbbbbbbbbb2` } },
    'ImplicitlyDenied', [mutations.removeCondition('RunInstancesInDeploymentVpc')]],
  ['RunInstances into the deployment\'s VPC is allowed', IN_VPC,
    { action: 'ec2:RunInstances', resource: arn.subnet('subnet-0aaaaaaaaaaaaaaa1'), context: { 'ec2:Vpc': `arn:aws:ec2:${REGION}:${ACCOUNT}:vpc/vpc-0aaaaaaaaaaaaaaa1` } },
    'Allowed', []],
  ['an instance without the cluster tag is not launched', DEPLOYMENT,
    { action: 'ec2:RunInstances', resource: arn.instance('*'), context: { 'aws:RequestTag/mayfly:cluster': 'staging', 'ec2:MetadataHttpTokens': 'required' } },
    'ImplicitlyDenied', [mutations.removeCondition('RunInstancesOnlyWithClusterTag')]],
  ['an instance without IMDSv2 is not launched', DEPLOYMENT,
    { action: 'ec2:RunInstances', resource: arn.instance('*'), context: { 'aws:RequestTag/mayfly:cluster': NAME, 'ec2:MetadataHttpTokens': 'optional' } },
    'ExplicitlyDenied', [mutations.removeStatement('DenyRunInstancesWithoutImdsv2')]],
  ['TerminateInstances of another deployment\'s instance is denied', DEPLOYMENT,
    { action: 'ec2:TerminateInstances', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { 'ec2:ResourceTag/mayfly:cluster': 'staging' } },
    'ImplicitlyDenied', [mutations.removeCondition('TerminateOnlyOwnInstances')]],
  ['TerminateInstances of a mayfly:protect instance is denied', DEPLOYMENT,
    { action: 'ec2:TerminateInstances', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: { ...own, 'ec2:ResourceTag/mayfly:protect': 'yes' } },
    'ExplicitlyDenied', [mutations.removeStatement('NeverTerminateProtected')]],
  ['TerminateInstances of an own unprotected instance is allowed', DEPLOYMENT,
    { action: 'ec2:TerminateInstances', resource: arn.instance('i-0aaaaaaaaaaaaaaa1'), context: own },
    'Allowed', []],
  ['PassRole of a role outside the deployment\'s path is denied', DEPLOYMENT,
    { action: 'iam:PassRole', resource: arn.role('admin'), context: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
    'ImplicitlyDenied', [mutations.anyResource('PassInstanceRolesToEc2')]],
  ['PassRole of another deployment\'s payer role is denied', DEPLOYMENT,
    { action: 'iam:PassRole', resource: arn.role('mayfly/staging/staging-payer-a-PayerRole-X'), context: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
    'ImplicitlyDenied', [mutations.anyResource('PassInstanceRolesToEc2')]],
  ['PassRole of a payer role to another service is denied', DEPLOYMENT,
    { action: 'iam:PassRole', resource: arn.role(`mayfly/${NAME}/${NAME}-payer-a-PayerRole-X`), context: { 'iam:PassedToService': 'lambda.amazonaws.com' } },
    'ImplicitlyDenied', [mutations.removeCondition('PassInstanceRolesToEc2')]],
  ['PassRole of a payer role of this deployment to EC2 is allowed', DEPLOYMENT,
    { action: 'iam:PassRole', resource: arn.role(`mayfly/${NAME}/${NAME}-payer-a-PayerRole-X`), context: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
    'Allowed', []],
  ['payer A\'s role reading payer B\'s prefix is denied', PAYER_A,
    { action: 's3:GetObject', resource: 'arn:aws:s3:::example-shared-drop/payer-b/2026-12/members.csv' },
    'ImplicitlyDenied', [mutations.anyResource('ReadJobInput')]],
  ['payer A\'s role reading payer B\'s secret is denied', PAYER_A,
    { action: 'secretsmanager:GetSecretValue', resource: `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:mayfly/payer-b-XyZaBc` },
    'ImplicitlyDenied', [mutations.anyResource('ReadSecrets')]],
  ['payer A\'s role reading its own prefix is allowed', PAYER_A,
    { action: 's3:GetObject', resource: 'arn:aws:s3:::example-shared-drop/payer-a/2026-12/members.csv' },
    'Allowed', []],
  ['payer A\'s role sending to the intake queue is denied', PAYER_A,
    { action: 'sqs:SendMessage', resource: `arn:aws:sqs:${REGION}:${ACCOUNT}:${NAME}-intake` },
    'ImplicitlyDenied', [mutations.anyResource('SendInstanceEvents')]],
];

async function runConditions() {
  const results = [];
  for (const [name, where, req, expected, flips] of CONDITIONS) {
    const got = await evaluate(where, req);
    results.push({ check: name, ok: got === expected, detail: `${req.action}: ${got}, expected ${expected}` });
    for (const mutate of flips) {
      const mutated = await evaluate(where, req, mutate);
      results.push({
        check: `${name} (and allowed without its statement or condition)`,
        ok: mutated === 'Allowed',
        detail: `${req.action} with the guard removed: ${mutated}`,
      });
    }
  }
  return results;
}

// Placeholders of operations.json: {name}, {account}, {region}.
function fill(x) {
  if (typeof x === 'string') return x.replace(/\{name\}/g, NAME).replace(/\{account\}/g, ACCOUNT).replace(/\{region\}/g, REGION);
  if (Array.isArray(x)) return x.map(fill);
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [fill(k), fill(v)]));
  return x;
}

async function runOperations() {
  const spec = JSON.parse(fs.readFileSync(path.join(__dirname, 'operations.json'), 'utf8'));
  const roles = {
    scheduler: DEPLOYMENT,
    instance: { file: 'infra/mayfly.yaml', stack: NAME, params: { DeploymentName: NAME }, role: 'InstanceRole' },
    payer: PAYER_A,
  };
  const results = [];
  for (const [roleName, ops] of Object.entries(spec.roles)) {
    const where = roles[roleName];
    for (const [operation, requests] of Object.entries(ops)) {
      for (const raw of [].concat(requests)) {
        const req = fill(raw);
        const got = await evaluate(where, req);
        results.push({ check: `${roleName} may ${operation} (${req.action} on ${req.resource})`, ok: got === 'Allowed', detail: got });
        const without = await evaluate(where, req, mutations.removeAction(where.role, req.action));
        results.push({ check: `${roleName} may not ${operation} once ${req.action} is removed`, ok: without !== 'Allowed', detail: without });
      }
    }
  }
  return results;
}

if (require.main === module) {
  const mode = process.argv[2];
  const run = { conditions: runConditions, operations: runOperations }[mode];
  if (!run) {
    console.error('usage: node tests/iam/check.cjs conditions|operations');
    process.exit(2);
  }
  run()
    .then((results) => {
      for (const r of results) console.log(JSON.stringify(r));
      process.exit(results.every((r) => r.ok) ? 0 : 1);
    })
    .catch((e) => {
      console.error(e.stack || String(e));
      process.exit(3);
    });
}
