using Pai.Cli;
using Spectre.Console;

// Redirected output (logs, CI) has no terminal width; tables would wrap at 80 columns.
if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
return PaiCommand.Build().Parse(args).Invoke();
