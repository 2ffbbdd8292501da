// Decodes a gzipped pprof with the npm `pprof-format` package (an implementation
// independent of the agent's) and prints what the tests compare, as JSON:
// value types, period, string_table[0], every sample's stack (function names per
// location, innermost first) with its values and labels, and the mappings.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Profile } from 'pprof-format';

const profile = Profile.decode(gunzipSync(readFileSync(process.argv[2])));
const strings = profile.stringTable.strings;
const str = (i) => strings[Number(i)];
const byId = (items) => new Map(items.map((x) => [Number(x.id), x]));
const functions = byId(profile.function);
const locations = byId(profile.location);
const mappings = byId(profile.mapping);
const valueType = (vt) => vt && [str(vt.type), str(vt.unit)];

const out = {
  sampleType: profile.sampleType.map(valueType),
  periodType: valueType(profile.periodType),
  period: Number(profile.period),
  firstString: strings[0],
  samples: profile.sample.map((s) => ({
    stack: s.locationId.map((id) => {
      const loc = locations.get(Number(id));
      const mapping = mappings.get(Number(loc.mappingId));
      return {
        functions: loc.line.map((l) => str(functions.get(Number(l.functionId)).name)),
        address: Number(loc.address),
        file: mapping ? str(mapping.filename) : '',
      };
    }),
    value: s.value.map(Number),
    labels: Object.fromEntries(
      s.label.map((l) => [str(l.key), Number(l.str) !== 0 ? str(l.str) : Number(l.num)]),
    ),
  })),
  mappings: profile.mapping.map((m) => ({
    file: str(m.filename),
    buildId: str(m.buildId),
    hasFunctions: m.hasFunctions,
  })),
};
process.stdout.write(JSON.stringify(out));
