using System.CommandLine;

namespace Pai.Cli;

/// <summary>
/// The defaults a command runs with: <see cref="RunConfig"/>'s, then the model's training defaults
/// (<see cref="ModelZoo.WithTrainingDefaults"/>), then the command's own (the sweep's short budget).
/// Help prints these values, and giving one explicitly does not change the run.
/// </summary>
internal sealed record CommandDefaults(Func<RunConfig, RunConfig> Overrides)
{
    /// <summary>No command-specific defaults.</summary>
    public static CommandDefaults Standard { get; } = new(c => c);

    /// <summary>The defaults for a model.</summary>
    public RunConfig For(string model)
    {
        var c = new RunConfig { Model = model };
        return Overrides(ModelZoo.Contains(model) ? ModelZoo.WithTrainingDefaults(c) : c);
    }

    /// <summary>The default of a setting as help shows it; per model when models differ.</summary>
    public string Describe(RunSetting s)
    {
        // The model is what the per-model defaults are keyed by: its own default is the command's.
        if (s.Property.Name == nameof(RunConfig.Model)) return $"default: {s.Format(s.Get(Overrides(new RunConfig())))}";
        var byModel = ModelZoo.Names.Select(m => (Model: m, Value: s.Format(s.Get(For(m))))).ToList();
        var groups = byModel.GroupBy(x => x.Value).OrderByDescending(g => g.Count()).ToList();
        if (groups.Count == 1) return groups[0].Key == "" ? "" : $"default: {groups[0].Key}";
        var exceptions = groups.Skip(1).Select(g => $"{g.Key} for {string.Join(", ", g.Select(x => x.Model))}");
        return $"default: {groups[0].Key}; {string.Join("; ", exceptions)}";
    }
}

/// <summary>
/// The options of one command, generated from the settings <see cref="RunConfig"/> declares
/// (<see cref="SettingAttribute"/>): names, help with the defaults the command uses, parsing and
/// range checks all come from the declarations, so no option is written out by hand.
/// </summary>
internal sealed class ConfigOptions
{
    readonly Dictionary<RunSetting, Option> options = new();
    readonly CommandDefaults defaults;

    /// <summary>Adds the options of the settings in <paramref name="groups"/> (except the named properties) to the command.</summary>
    public ConfigOptions(Command command, SettingGroup groups, CommandDefaults? defaults = null, params string[] except)
        : this(command, s => (s.Declaration.Group & groups) != 0 && !except.Contains(s.Property.Name), defaults)
    {
    }

    /// <summary>Adds the options of the settings <paramref name="include"/> selects to the command.</summary>
    public ConfigOptions(Command command, Func<RunSetting, bool> include, CommandDefaults? defaults = null)
    {
        this.defaults = defaults ?? CommandDefaults.Standard;
        // Every command that reads a run's settings takes the execution ones (the device) too.
        foreach (var s in RunSettings.All.Where(s => s.Declaration.Group == SettingGroup.Execution || include(s)))
        {
            var d = s.Declaration;
            var aliases = d.Alias is null ? Array.Empty<string>() : [d.Alias];
            var fallback = this.defaults.Describe(s);
            var choices = d.Choices is null ? "" : $" ({string.Join(", ", d.Choices)})";
            var help = d.Description + choices + (fallback == "" || s.IsFlag ? "" : $" [{fallback}]");
            Option option = s.IsFlag
                ? new Option<bool>(d.Option, aliases) { Description = help }
                : new Option<string>(d.Option, aliases) { Description = help, HelpName = HelpName(s) };
            options[s] = option;
            command.Options.Add(option);
        }
    }

    static string HelpName(RunSetting s) =>
        s.ValueType == typeof(string) ? "text" : s.ValueType == typeof(IReadOnlyList<int>) ? "list" : "number";

    /// <summary>The option of a setting (by property name), when this command has it.</summary>
    public Option? this[string property] => options.FirstOrDefault(kv => kv.Key.Property.Name == property).Value;

    /// <summary>Whether the option of the setting was given on the command line.</summary>
    public bool Given(ParseResult p, string property) => this[property] is { } o && p.GetResult(o) is { Implicit: false };

    /// <summary>
    /// The configuration the command line describes: the defaults for the chosen model with every
    /// given option applied (parsed and range-checked; a bad value throws ArgumentException naming
    /// the option). Criterion and sparsity come from the options when this command has them.
    /// </summary>
    public RunConfig Read(ParseResult p)
    {
        var model = Given(p, nameof(RunConfig.Model)) ? Text(p, RunSettings.Of(nameof(RunConfig.Model))).Trim().ToLowerInvariant() : new RunConfig().Model;
        var c = defaults.For(model);
        foreach (var (s, option) in options)
        {
            if (p.GetResult(option) is not { Implicit: false }) continue;
            var value = s.IsFlag ? p.GetValue((Option<bool>)option) : s.Parse(Text(p, s));
            if (s.Check(value) is { } problem) throw new ArgumentException(problem);
            c = s.With(c, value);
        }
        return c;
    }

    string Text(ParseResult p, RunSetting s) => p.GetValue((Option<string>)options[s]) ?? "";
}
