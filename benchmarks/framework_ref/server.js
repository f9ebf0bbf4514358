// The reference bridge of benchmarks/bridge_bench.py: @novu/framework 2.13.2 on express, one
// process, serving XNovu's static `user-signup` workflow as its bridge declares it (the payload
// schema with `_xnovu` beside the caller's fields; an email step answering the content XNovu
// rendered into `payload._xnovu.rendered.email`, else the workflow's own welcome text).
//
//   PORT=4000 NOVU_SECRET_KEY=... node server.js
//
// The payload schema is read from USER_SIGNUP_SCHEMA (a JSON file the benchmark writes from
// shared/workflows/static/user_signup), so both bridges validate the same schema.
import { readFileSync } from 'node:fs';
import express from 'express';
import { Client, workflow } from '@novu/framework';
import { serve } from '@novu/framework/express';

const payloadSchema = JSON.parse(readFileSync(process.env.USER_SIGNUP_SCHEMA, 'utf8'));

const userSignup = workflow(
  'user-signup',
  async ({ step, payload }) => {
    await step.email('email', async () => {
      const rendered = payload._xnovu?.rendered?.email;
      if (rendered) return { subject: rendered.subject, body: rendered.body };
      return {
        subject: `Welcome to XNovu, ${payload.name}!`,
        body: `<h1>Welcome, ${payload.name}!</h1><p>Your account ${payload.email} is ready.</p>`,
      };
    });
  },
  { payloadSchema, name: 'User sign-up', tags: ['onboarding'] },
);

const app = express();
app.use(express.json({ limit: '1mb' }));
app.get('/healthz', (_req, res) => res.json({ status: 'ok' }));
app.use(
  '/api/novu',
  serve({
    client: new Client({ secretKey: process.env.NOVU_SECRET_KEY, strictAuthentication: true }),
    workflows: [userSignup],
  }),
);
const port = Number(process.env.PORT || 4000);
app.listen(port, '127.0.0.1', () => console.log(`framework_ref listening on ${port}`));
